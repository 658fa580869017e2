// Following a chat's answer over EventSource: the queue position, tokens appended as text, a restart after the
// model was retried, the end. A reopened stream replays events already seen, so each is taken once by its seq.
// The server's `error` event (it carries data) ends the chat; EventSource's own connection errors do not: while
// it reconnects by itself nothing is done, and once it gave up (CLOSED) the server is asked why.
"use strict";

chat.stream = (() => {
  const { page, setConnection, scrollToEnd, showQueued, showDetails } = chat.view;
  const { FALLBACK_RETRY_AFTER_S, CHAT_FAILURES, explainRefusal, readJson, labelNotice, showNotice } = chat.refusals;
  const conversation = chat.conversation;
  const { keepAnswer, endTurn } = conversation;

  const MOST_STREAM_RECOVERIES = 10;

  function followChat(turn) {
    const events = new EventSource(turn.chat.eventsUrl);
    turn.events = events;
    const onTurn = (handler) => (message) => {
      if (turn !== conversation.currentTurn || turn.finished) return;
      handler(message);
    };
    events.addEventListener("open", onTurn(() => {
      if (page.connection.dataset.state === "reconnecting") setConnection("answering", "Answering");
    }));
    events.addEventListener("queued", onTurn((message) => showQueued(turn, JSON.parse(message.data))));
    events.addEventListener("token", onTurn((message) => onToken(turn, JSON.parse(message.data))));
    events.addEventListener("reset", onTurn((message) => onReset(turn, JSON.parse(message.data))));
    events.addEventListener("done", onTurn((message) => onDone(turn, JSON.parse(message.data))));
    // The server's own `error` event carries data; EventSource's connection errors do not.
    events.addEventListener("error", onTurn((event) => {
      if (event instanceof MessageEvent && typeof event.data === "string" && event.data !== "") {
        onServerError(turn, JSON.parse(event.data));
      } else {
        onConnectionError(turn, events);
      }
    }));
  }

  // Events carry increasing seq numbers; one seen before (a replay after reopening) is skipped.
  function isNew(turn, data) {
    if (typeof data.seq !== "number") return true;
    if (data.seq <= turn.lastSeq) return false;
    turn.lastSeq = data.seq;
    return true;
  }

  function onToken(turn, data) {
    if (!isNew(turn, data)) return;
    if (turn.timing.firstTokenAt === null) {
      turn.timing.firstTokenAt = performance.now();
      turn.statusLine.textContent = "";
      setConnection("answering", "Answering");
    }
    turn.answerText += data.text;
    turn.answer.textNode.appendData(data.text);
    scrollToEnd();
  }

  function onReset(turn, data) {
    if (!isNew(turn, data)) return;
    turn.answerText = "";
    turn.answer.textNode.data = "";
    turn.statusLine.textContent = "The model was retried, so the answer starts again.";
  }

  function onDone(turn, data) {
    if (!isNew(turn, data)) return;
    turn.events.close();
    turn.answer.bubble.dataset.state = "done";
    const tokens = data.usage ? data.usage.completion_tokens : null;
    turn.statusLine.textContent = "";
    keepAnswer(turn);
    showDetails(turn, tokens);
    setConnection("ready", "Ready");
    endTurn(turn);
  }

  function onServerError(turn, data) {
    if (data.code === "stream_interrupted") {
      // The gateway could not go on relaying; EventSource reconnects by itself and resumes after Last-Event-ID.
      setConnection("reconnecting", "Reconnecting…");
      return;
    }
    if (!isNew(turn, data)) return;
    failTurn(turn, CHAT_FAILURES[data.code] || data.message || "The chat failed.", data.code);
  }

  // EventSource lost its connection. While it retries by itself (CONNECTING) there is nothing to do; once it gives
  // up (CLOSED: the server answered an error status), ask the server why and come back when that can help.
  function onConnectionError(turn, events) {
    if (events.readyState === EventSource.CONNECTING) {
      setConnection("reconnecting", "Connection lost; reconnecting…");
      return;
    }
    events.close();
    recoverStream(turn);
  }

  async function recoverStream(turn) {
    if (turn !== conversation.currentTurn || turn.stopped || turn.finished) return;
    turn.recoveries += 1;
    if (turn.recoveries > MOST_STREAM_RECOVERIES) {
      failTurn(turn, "The connection to the answer kept failing.", "stream_lost");
      return;
    }
    setConnection("reconnecting", "Reconnecting…");
    const reopen = () => followChat(turn);
    let response;
    const probe = new AbortController();
    try {
      response = await fetch(turn.chat.eventsUrl, {
        headers: { "last-event-id": String(turn.lastSeq) },
        signal: probe.signal,
      });
    } catch (networkError) {
      showNotice("warning", "Cannot reach the service; check your connection.",
        { retryInS: FALLBACK_RETRY_AFTER_S, onRetry: () => recoverStream(turn) });
      return;
    }
    if (response.ok) {
      probe.abort();
      reopen();
      return;
    }
    const body = await readJson(response);
    if (response.status === 404) {
      failTurn(turn, "This chat is no longer available: it ended too long ago, or the service lost it.",
        "chat_not_found");
      return;
    }
    const explanation = explainRefusal(response, body);
    if (!explanation.retryable) {
      failTurn(turn, explanation.text, explanation.code);
      return;
    }
    labelNotice(explanation.code, explanation.layer);
    showNotice("warning", explanation.text,
      { retryInS: explanation.retryAfterS ?? FALLBACK_RETRY_AFTER_S, onRetry: () => recoverStream(turn) });
  }

  // A chat that had started ended without an answer: say why, and give the question back to edit or send again.
  function failTurn(turn, text, code) {
    if (turn.events) turn.events.close();
    if (turn.answer) turn.answer.bubble.dataset.state = "failed";
    if (turn.statusLine) turn.statusLine.textContent = "";
    labelNotice(code, "stream");
    setConnection("failed", "The chat failed");
    showNotice("error", text);
    if (page.input.value === "") page.input.value = turn.text;
    endTurn(turn);
  }

  return { followChat };
})();
