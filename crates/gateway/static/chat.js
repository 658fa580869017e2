// The bundled chat page's behaviour: sends the conversation to POST /api/chats (trimmed to /api/chat-limits),
// follows the answer over EventSource (resuming by event id), shows the queue position, explains refusals in plain
// words with a countdown and an automatic retry, stops a chat with DELETE, and keeps the conversation across a
// reload. Model output only ever reaches the page as text (textContent and Text nodes), never as HTML.
"use strict";

// Used until GET /api/chat-limits answers: the gateway's defaults.
const DEFAULT_LIMITS = { max_messages: 64, max_message_chars: 32000, max_body_bytes: 262144 };
// When a retryable failure names no Retry-After (an nginx 502 page, a dropped connection).
const FALLBACK_RETRY_AFTER_S = 3;
// A refusal that asks for a longer wait is explained but not retried by itself.
const LONGEST_AUTOMATIC_WAIT_S = 120;
const MOST_AUTOMATIC_RETRIES = 20;
const MOST_STREAM_RECOVERIES = 10;
const STORAGE_KEY = "traffic-dam-chat";

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

let limits = DEFAULT_LIMITS;
// The finished turns, as the API takes them: {role, content}.
const history = [];
// The turn in progress, or null.
let currentTurn = null;
// The countdown before an automatic retry, or null.
let pendingRetry = null;

// ---- Refusals, in plain words ----

// code -> what happened, and whether trying again later can succeed. `edge` is used when nginx refused.
const REFUSALS = {
  rate_limited: {
    gate: "You are sending chats faster than this service allows.",
    edge: "Too many requests are coming from your network address; the front door is holding them back.",
    retry: true,
  },
  too_many_connections: {
    gate: "This server is holding as many open answers as it can.",
    edge: "Your network address has too many requests open at once.",
    retry: true,
  },
  queue_full: { gate: "The line for the model is full right now.", retry: true },
  too_many_active_chats: {
    gate: "You already have as many chats waiting or running as allowed; one has to finish first.",
    retry: true,
  },
  budget_exhausted: { gate: "You have used up today's allowance of tokens.", retry: false },
  maintenance: {
    gate: "The service is paused for maintenance: chats already in line carry on, new ones are not taken yet.",
    retry: true,
  },
  upstream_unavailable: {
    gate: "The language model is not answering right now, so new chats are not taken.",
    retry: true,
  },
  blocked: { gate: "Chats from your network address are blocked for a while.", retry: false },
  backend_unavailable: { gate: "The service lost its queue for a moment.", retry: true },
  too_many_messages: { gate: "This conversation has more messages than one chat may carry.", retry: false },
  message_too_long: { gate: "A message is longer than this service accepts.", retry: false },
  body_too_large: { gate: "This conversation is too long to send.", retry: false },
};

// How a chat that had started ended, when it did not end with an answer.
const CHAT_FAILURES = {
  expired: "Your chat waited in line too long and expired before a worker could take it.",
  cancelled: "The chat was cancelled.",
  dead_lettered: "The model failed on this chat several times, so it was set aside.",
  upstream_failed: "The language model failed while answering.",
};

// What a failed POST means: {text, retryable, retryAfterS}. Never throws, whatever the body is.
function explainRefusal(response, body) {
  const layer = response.headers.get("x-dam-layer") === "edge" ? "edge" : "gate";
  const code = body && body.error && typeof body.error.code === "string" ? body.error.code : null;
  const retryAfterS = parseRetryAfter(response.headers.get("retry-after"))
    ?? (body && body.error && Number.isFinite(body.error.retry_after_s) ? body.error.retry_after_s : null);
  const known = code ? REFUSALS[code] : undefined;
  const transient = [429, 502, 503, 504].includes(response.status);
  if (known) {
    return { text: known[layer] || known.gate, retryable: known.retry, retryAfterS, code, layer };
  }
  if (code) {
    return { text: body.error.message || code, retryable: transient, retryAfterS, code, layer };
  }
  // Not the JSON error shape: a proxy's HTML page, an empty answer.
  const statusText = response.statusText ? ` ${response.statusText}` : "";
  return {
    text: `The service did not answer properly (HTTP ${response.status}${statusText}).`,
    retryable: transient,
    retryAfterS,
    code: null,
    layer: "proxy",
  };
}

// Retry-After as seconds: a number of seconds or an HTTP date; null when absent or unreadable.
function parseRetryAfter(value) {
  if (value === null || value.trim() === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function describeWait(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min`;
  return `about ${Math.round(seconds / 3600)} h`;
}

// ---- What the page shows ----

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

function showNotice(kind, text, { retryInS = null, onRetry = null } = {}) {
  clearPendingRetry();
  page.notice.hidden = false;
  page.notice.dataset.kind = kind;
  page.noticeText.textContent = text;
  page.retryNow.hidden = onRetry === null;
  page.dismiss.hidden = onRetry !== null;
  page.countdown.hidden = retryInS === null;
  if (onRetry !== null && retryInS !== null) {
    const deadline = Date.now() + retryInS * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      page.countdown.textContent = `Trying again in ${left} s…`;
      page.countdown.dataset.secondsLeft = String(left);
      if (left === 0) retryFromNotice();
    };
    pendingRetry = { timer: setInterval(tick, 250), onRetry };
    tick();
  } else if (onRetry !== null) {
    pendingRetry = { timer: null, onRetry };
  }
}

function retryFromNotice() {
  const retry = pendingRetry;
  hideNotice();
  if (retry) retry.onRetry();
}

function clearPendingRetry() {
  if (pendingRetry && pendingRetry.timer !== null) clearInterval(pendingRetry.timer);
  pendingRetry = null;
}

function hideNotice() {
  clearPendingRetry();
  page.notice.hidden = true;
  page.notice.dataset.kind = "none";
  page.countdown.hidden = true;
  page.notice.dataset.code = "";
  page.notice.dataset.layer = "";
}

function showTrimNote(dropped) {
  page.trimNote.hidden = dropped === 0;
  page.trimNote.textContent = dropped === 0 ? "" :
    `The oldest ${dropped} message${dropped === 1 ? " is" : "s are"} no longer sent to the model: ` +
    `one chat carries at most ${limits.max_messages} messages.`;
}

function setBusy(busy) {
  page.send.disabled = busy;
  page.stop.hidden = !busy;
  page.stop.disabled = !busy;
  if (!busy) page.input.focus();
}

// ---- The conversation ----

// The messages to send for a new user text: the history with the oldest turns dropped until the request fits
// the limits. Returns {messages, dropped}.
function messagesFor(text) {
  const all = [...history, { role: "user", content: text }]
    .map((message) => ({ role: message.role, content: message.content.slice(0, limits.max_message_chars) }));
  const encoder = new TextEncoder();
  // Room for the envelope's other fields.
  const byteBudget = limits.max_body_bytes - 512;
  const fits = (start) => all.length - start <= limits.max_messages
    && encoder.encode(JSON.stringify({ messages: all.slice(start) })).length <= byteBudget;
  let start = 0;
  while (start < all.length - 1 && !fits(start)) {
    start += 1;
    // A conversation sent to the model starts with a user turn.
    while (start < all.length - 1 && all[start].role !== "user") start += 1;
  }
  return { messages: all.slice(start), dropped: start };
}

function newIdempotencyKey() {
  if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function startTurn(text) {
  hideNotice();
  const { bubble } = addBubble("user", text);
  const turn = {
    text,
    userBubble: bubble,
    idempotencyKey: newIdempotencyKey(),
    attempts: 0,
    chat: null,
    events: null,
    answer: null,
    answerText: "",
    lastSeq: 0,
    recoveries: 0,
    statusLine: null,
    stopped: false,
    finished: false,
    timing: { sentAt: 0, firstTokenAt: null, instance: null, serverTiming: "" },
  };
  currentTurn = turn;
  setBusy(true);
  submitTurn(turn);
}

async function submitTurn(turn) {
  if (turn !== currentTurn || turn.stopped) return;
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

async function readJson(response) {
  const type = response.headers.get("content-type") || "";
  if (!type.includes("json")) return null;
  try {
    return await response.json();
  } catch (notJson) {
    return null;
  }
}

// A refused or unreachable POST: count down and retry when a retry can succeed, otherwise give the text back.
function refuse(turn, explanation) {
  if (turn !== currentTurn || turn.stopped) return;
  const waitS = explanation.retryAfterS ?? FALLBACK_RETRY_AFTER_S;
  const retryable = explanation.retryable && waitS <= LONGEST_AUTOMATIC_WAIT_S
    && turn.attempts < MOST_AUTOMATIC_RETRIES;
  page.notice.dataset.code = explanation.code || "";
  page.notice.dataset.layer = explanation.layer;
  if (retryable) {
    setConnection("waiting-to-retry", "Waiting to retry");
    showNotice("warning", explanation.text, { retryInS: waitS, onRetry: () => submitTurn(turn) });
    return;
  }
  const later = explanation.retryAfterS !== null ? ` You can try again in ${describeWait(explanation.retryAfterS)}.` : "";
  setConnection("refused", "Not sent");
  showNotice("error", explanation.text + later);
  turn.userBubble.dataset.state = "not-sent";
  if (page.input.value === "") page.input.value = turn.text;
  endTurn(turn);
}

function ensureAnswerBubble(turn) {
  if (turn.answer) return;
  const { bubble, textNode } = addBubble("assistant", "");
  bubble.dataset.state = "streaming";
  turn.answer = { bubble, textNode };
  turn.statusLine = addMessageStatus("");
}

function showQueued(turn, queued) {
  if (turn.timing.firstTokenAt !== null) return;
  let text;
  if (!queued.position) {
    text = "A worker has your chat; the first words are on their way.";
  } else {
    const wait = queued.eta_ms == null ? "estimating the wait" : `about ${Math.max(1, Math.ceil(queued.eta_ms / 1000))} s`;
    text = `You are number ${queued.position} in line, ${wait}.`;
  }
  turn.statusLine.textContent = text;
  setConnection(queued.position ? "queued" : "answering", queued.position ? text : "Answering");
}

function followChat(turn) {
  const events = new EventSource(turn.chat.eventsUrl);
  turn.events = events;
  const onTurn = (handler) => (message) => {
    if (turn !== currentTurn || turn.finished) return;
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
  history.push({ role: "user", content: turn.text }, { role: "assistant", content: turn.answerText });
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
  if (turn !== currentTurn || turn.stopped || turn.finished) return;
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
  page.notice.dataset.code = explanation.code || "";
  page.notice.dataset.layer = explanation.layer;
  showNotice("warning", explanation.text,
    { retryInS: explanation.retryAfterS ?? FALLBACK_RETRY_AFTER_S, onRetry: () => recoverStream(turn) });
}

function failTurn(turn, text, code) {
  if (turn.events) turn.events.close();
  if (turn.answer) turn.answer.bubble.dataset.state = "failed";
  if (turn.statusLine) turn.statusLine.textContent = "";
  page.notice.dataset.code = code || "";
  page.notice.dataset.layer = "stream";
  setConnection("failed", "The chat failed");
  showNotice("error", text);
  if (page.input.value === "") page.input.value = turn.text;
  endTurn(turn);
}

async function stopTurn() {
  const turn = currentTurn;
  if (!turn || turn.finished) return;
  turn.stopped = true;
  hideNotice();
  if (turn.events) turn.events.close();
  if (turn.answer) turn.answer.bubble.dataset.state = "stopped";
  if (turn.statusLine) turn.statusLine.textContent = "";
  // The partial answer stays in the conversation; a question with no answer yet is withdrawn.
  if (turn.answerText !== "") {
    history.push({ role: "user", content: turn.text }, { role: "assistant", content: turn.answerText });
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

function endTurn(turn) {
  turn.finished = true;
  if (currentTurn === turn) currentTurn = null;
  setBusy(false);
  saveConversation();
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

// ---- Surviving a reload ----

function saveConversation() {
  const turn = currentTurn;
  const running = turn && turn.chat && !turn.finished ? { text: turn.text, chat: turn.chat } : null;
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ history, running }));
  } catch (storageUnavailable) {
    // Private modes may refuse storage; the page works without it.
  }
}

function restoreConversation() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch (unreadable) {
    saved = null;
  }
  if (!saved || !Array.isArray(saved.history)) return;
  for (const message of saved.history) {
    if (typeof message.content !== "string" || !["user", "assistant"].includes(message.role)) continue;
    history.push({ role: message.role, content: message.content });
    const { bubble } = addBubble(message.role, message.content);
    if (message.role === "assistant") bubble.dataset.state = "done";
  }
  const running = saved.running;
  if (running && typeof running.text === "string" && running.chat && typeof running.chat.eventsUrl === "string") {
    // The answer was still coming when the page was left: follow it again from the start of its replay.
    const { bubble } = addBubble("user", running.text);
    currentTurn = {
      text: running.text, userBubble: bubble, idempotencyKey: newIdempotencyKey(), attempts: 1,
      chat: running.chat, events: null, answer: null, answerText: "", lastSeq: 0, recoveries: 0,
      statusLine: null, stopped: false, finished: false,
      timing: { sentAt: performance.now(), firstTokenAt: null, instance: null, serverTiming: "" },
    };
    setBusy(true);
    ensureAnswerBubble(currentTurn);
    currentTurn.statusLine.textContent = "Picking up the answer where it was…";
    setConnection("reconnecting", "Reconnecting…");
    followChat(currentTurn);
  }
}

// ---- Start ----

async function loadLimits() {
  try {
    const response = await fetch("/api/chat-limits");
    const body = response.ok ? await readJson(response) : null;
    if (body && Number.isInteger(body.max_messages) && Number.isInteger(body.max_message_chars)) {
      limits = { ...DEFAULT_LIMITS, ...body };
    }
  } catch (unreachable) {
    // The defaults serve; a refusal will say what is wrong.
  }
  page.input.maxLength = limits.max_message_chars;
}

page.form.addEventListener("submit", (submitEvent) => {
  submitEvent.preventDefault();
  const text = page.input.value.trim();
  if (!text || currentTurn) return;
  page.input.value = "";
  startTurn(text);
});

page.input.addEventListener("keydown", (keyEvent) => {
  if (keyEvent.key === "Enter" && !keyEvent.shiftKey && !keyEvent.altKey && !keyEvent.ctrlKey
    && !keyEvent.metaKey && !keyEvent.isComposing) {
    keyEvent.preventDefault();
    page.form.requestSubmit();
  }
});

document.addEventListener("keydown", (keyEvent) => {
  if (keyEvent.key === "Escape" && currentTurn) stopTurn();
});

page.stop.addEventListener("click", () => stopTurn());
page.retryNow.addEventListener("click", () => retryFromNotice());
page.dismiss.addEventListener("click", () => hideNotice());

window.addEventListener("offline", () => setConnection("offline", "Offline: waiting for the network"));
window.addEventListener("online", () => {
  if (!currentTurn) setConnection("ready", "Ready");
});

(async () => {
  await loadLimits();
  setConnection("ready", navigator.onLine === false ? "Offline: waiting for the network" : "Ready");
  restoreConversation();
  setBusy(currentTurn !== null);
})();
