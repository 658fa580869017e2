// The chat page's view: its elements, the status line, the message bubbles, the details line and the Send/Stop
// buttons. Model output only ever reaches the page as text (textContent and Text nodes), never as HTML.
//
// It also creates `chat`, the one global name of the page's scripts. chat.html loads them deferred, in this order:
// chat-view.js, chat-refusals.js, chat-conversation.js, chat-stream.js, chat-turn.js, chat.js. Each adds its part
// (`chat.view`, `chat.refusals`, ...) and uses only the parts of the scripts before it.
"use strict";

const chat = {};

chat.view = (() => {
  const page = {
    log: document.getElementById("log"),
    form: document.getElementById("composer"),
    input: document.getElementById("input"),
    send: document.getElementById("send"),
    stop: document.getElementById("stop"),
    notice: document.getElementById("notice"),
    noticeText: document.getElementById("notice-text"),
    countdown: document.getElementById("countdown"),
    retryNow: document.getElementById("retry-now"),
    dismiss: document.getElementById("dismiss"),
    trimNote: document.getElementById("trim-note"),
    connection: document.getElementById("connection"),
    details: document.getElementById("details"),
  };

  function setConnection(state, text) {
    page.connection.dataset.state = state;
    page.connection.textContent = text;
  }

  function addBubble(role, text) {
    const bubble = document.createElement("div");
    bubble.className = `message ${role}`;
    bubble.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
    // A Text node of its own, so streamed tokens are appended as text and never parsed.
    const textNode = document.createTextNode(text);
    bubble.appendChild(textNode);
    page.log.appendChild(bubble);
    scrollToEnd();
    return { bubble, textNode };
  }

  function addMessageStatus(text) {
    const line = document.createElement("p");
    line.className = "message-status";
    line.textContent = text;
    page.log.appendChild(line);
    scrollToEnd();
    return line;
  }

  function scrollToEnd() {
    const main = page.log.parentElement;
    main.scrollTop = main.scrollHeight;
  }

  function setBusy(busy) {
    page.send.disabled = busy;
    page.stop.hidden = !busy;
    page.stop.disabled = !busy;
    if (!busy) page.input.focus();
  }

  // The answer's bubble and the status line under it, made once per turn.
  function ensureAnswerBubble(turn) {
    if (turn.answer) return;
    const { bubble, textNode } = addBubble("assistant", "");
    bubble.dataset.state = "streaming";
    turn.answer = { bubble, textNode };
    turn.statusLine = addMessageStatus("");
  }

  // The place in line, or that a worker has the chat, until the first token.
  function showQueued(turn, queued) {
    if (turn.timing.firstTokenAt !== null) return;
    let text;
    if (!queued.position) {
      text = "A worker has your chat; the first words are on their way.";
    } else {
      const wait = queued.eta_ms == null
        ? "estimating the wait"
        : `about ${Math.max(1, Math.ceil(queued.eta_ms / 1000))} s`;
      text = `You are number ${queued.position} in line, ${wait}.`;
    }
    turn.statusLine.textContent = text;
    setConnection(queued.position ? "queued" : "answering", queued.position ? text : "Answering");
  }

  // "instance gateway-1 · admission 1.2 ms · queue 310 ms · first token 0.52 s · 48 tokens in 1.31 s"
  function showDetails(turn, tokens = null) {
    const parts = [];
    if (turn.timing.instance) parts.push(`instance ${turn.timing.instance}`);
    for (const metric of turn.timing.serverTiming.split(",")) {
      const match = /^\s*([\w-]+);dur=([\d.]+)/.exec(metric);
      if (match) parts.push(`${match[1]} ${Number(match[2]).toFixed(1)} ms`);
    }
    if (turn.timing.firstTokenAt !== null) {
      parts.push(`first token ${((turn.timing.firstTokenAt - turn.timing.sentAt) / 1000).toFixed(2)} s`);
    }
    if (tokens !== null) {
      parts.push(`${tokens} tokens in ${((performance.now() - turn.timing.sentAt) / 1000).toFixed(2)} s`);
    }
    page.details.textContent = parts.join(" · ");
  }

  return {
    page,
    setConnection,
    addBubble,
    addMessageStatus,
    scrollToEnd,
    setBusy,
    ensureAnswerBubble,
    showQueued,
    showDetails,
  };
})();
