// One turn of the conversation, from the question to the end of its answer: POST /api/chats (with an idempotency
// key, so that a retry never enqueues the chat twice), a refusal counted down and retried when a retry can
// succeed, the answer followed (chat-stream.js), a turn picked up again after a reload, and Stop (DELETE).
"use strict";

chat.turn = (() => {
  const { page, setConnection, addBubble, setBusy, ensureAnswerBubble, showQueued, showDetails } = chat.view;
  const { FALLBACK_RETRY_AFTER_S, explainRefusal, describeWait, readJson, labelNotice, showNotice, hideNotice } =
    chat.refusals;
  const conversation = chat.conversation;
  const { messagesFor, showTrimNote, saveConversation, keepAnswer, endTurn } = conversation;
  const { followChat } = chat.stream;

  // A refusal that asks for a longer wait is explained but not retried by itself.
  const LONGEST_AUTOMATIC_WAIT_S = 120;
  const MOST_AUTOMATIC_RETRIES = 20;

  function newIdempotencyKey() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  // `startedChat` is {id, eventsUrl} once the gateway took the chat, otherwise null.
  function newTurn(text, userBubble, { attempts, startedChat, sentAt }) {
    return {
      text,
      userBubble,
      idempotencyKey: newIdempotencyKey(),
      attempts,
      chat: startedChat,
      events: null,
      answer: null,
      answerText: "",
      lastSeq: 0,
      recoveries: 0,
      statusLine: null,
      stopped: false,
      finished: false,
      timing: { sentAt, firstTokenAt: null, instance: null, serverTiming: "" },
    };
  }

  function startTurn(text) {
    hideNotice();
    const { bubble } = addBubble("user", text);
    const turn = newTurn(text, bubble, { attempts: 0, startedChat: null, sentAt: 0 });
    conversation.currentTurn = turn;
    setBusy(true);
    submitTurn(turn);
  }

  // The answer was still coming when the page was left: follow it again from the start of its replay.
  function resumeTurn(running) {
    const { bubble } = addBubble("user", running.text);
    const turn = newTurn(running.text, bubble, { attempts: 1, startedChat: running.chat, sentAt: performance.now() });
    conversation.currentTurn = turn;
    setBusy(true);
    ensureAnswerBubble(turn);
    turn.statusLine.textContent = "Picking up the answer where it was…";
    setConnection("reconnecting", "Reconnecting…");
    followChat(turn);
  }

  async function submitTurn(turn) {
    if (turn !== conversation.currentTurn || turn.stopped) return;
    turn.attempts += 1;
    const { messages, dropped } = messagesFor(turn.text);
    showTrimNote(dropped);
    setConnection("sending", "Sending…");
    turn.timing.sentAt = performance.now();
    let response;
    try {
      response = await fetch("/api/chats", {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": turn.idempotencyKey },
        body: JSON.stringify({ messages }),
      });
    } catch (networkError) {
      refuse(turn, {
        text: "Cannot reach the service; check your connection.",
        retryable: true,
        retryAfterS: null,
        code: null,
        layer: "network",
      });
      return;
    }
    const body = await readJson(response);
    turn.timing.instance = response.headers.get("x-dam-instance");
    turn.timing.serverTiming = response.headers.get("server-timing") || "";
    // Which instance answered and how long its parts took, refusals included.
    showDetails(turn);
    if (!response.ok || !body || typeof body.events_url !== "string") {
      if (turn.stopped) return;
      refuse(turn, explainRefusal(response, body));
      return;
    }
    turn.chat = { id: body.id, eventsUrl: body.events_url };
    if (turn.stopped) {
      // Stop was pressed while the chat was being created: cancel it now that it has an id.
      cancelChat(turn.chat.id);
      return;
    }
    saveConversation();
    ensureAnswerBubble(turn);
    showQueued(turn, { position: body.position, eta_ms: null });
    followChat(turn);
  }

  // A refused or unreachable POST: count down and retry when a retry can succeed, otherwise give the text back.
  function refuse(turn, explanation) {
    if (turn !== conversation.currentTurn || turn.stopped) return;
    const waitS = explanation.retryAfterS ?? FALLBACK_RETRY_AFTER_S;
    const retryable = explanation.retryable && waitS <= LONGEST_AUTOMATIC_WAIT_S
      && turn.attempts < MOST_AUTOMATIC_RETRIES;
    labelNotice(explanation.code, explanation.layer);
    if (retryable) {
      setConnection("waiting-to-retry", "Waiting to retry");
      showNotice("warning", explanation.text, { retryInS: waitS, onRetry: () => submitTurn(turn) });
      return;
    }
    const later = explanation.retryAfterS !== null
      ? ` You can try again in ${describeWait(explanation.retryAfterS)}.`
      : "";
    setConnection("refused", "Not sent");
    showNotice("error", explanation.text + later);
    turn.userBubble.dataset.state = "not-sent";
    if (page.input.value === "") page.input.value = turn.text;
    endTurn(turn);
  }

  async function stopTurn() {
    const turn = conversation.currentTurn;
    if (!turn || turn.finished) return;
    turn.stopped = true;
    hideNotice();
    if (turn.events) turn.events.close();
    if (turn.answer) turn.answer.bubble.dataset.state = "stopped";
    if (turn.statusLine) turn.statusLine.textContent = "";
    // The partial answer stays in the conversation; a question with no answer yet is withdrawn.
    if (turn.answerText !== "") {
      keepAnswer(turn);
    } else {
      turn.userBubble.dataset.state = "not-sent";
    }
    setConnection("ready", "Stopped");
    endTurn(turn);
    // Without an id yet, submitTurn cancels the chat as soon as the POST answers.
    if (turn.chat) await cancelChat(turn.chat.id);
  }

  async function cancelChat(id) {
    try {
      const response = await fetch(`/api/chats/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (!response.ok && response.status !== 404) {
        showNotice("error", `The chat could not be stopped (HTTP ${response.status}); it may still finish.`);
      }
    } catch (networkError) {
      showNotice("error", "Cannot reach the service to stop the chat; it may still finish.");
    }
  }

  return { startTurn, resumeTurn, stopTurn };
})();
