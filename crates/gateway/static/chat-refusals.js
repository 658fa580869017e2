// Refusals in plain words, and the notice that shows them: what a failed request means (the edge's or the gate's
// refusal, told apart by X-Dam-Layer, or a proxy's page), how long Retry-After asks to wait, and the notice with
// its countdown, its automatic retry and its Retry now / Dismiss buttons.
"use strict";

chat.refusals = (() => {
  const { page } = chat.view;

  // When a retryable failure names no Retry-After (an nginx 502 page, a dropped connection).
  const FALLBACK_RETRY_AFTER_S = 3;

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

  // The countdown before an automatic retry, or null.
  let pendingRetry = null;

  // What a failed request means: {text, retryable, retryAfterS, code, layer}. Never throws, whatever the body is.
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

  // The body of an answer when it is JSON, otherwise null.
  async function readJson(response) {
    const type = response.headers.get("content-type") || "";
    if (!type.includes("json")) return null;
    try {
      return await response.json();
    } catch (notJson) {
      return null;
    }
  }

  // Which refusal the notice shows, for the page's tests and styles: its code and the layer that refused.
  function labelNotice(code, layer) {
    page.notice.dataset.code = code || "";
    page.notice.dataset.layer = layer;
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

  return {
    FALLBACK_RETRY_AFTER_S,
    CHAT_FAILURES,
    explainRefusal,
    describeWait,
    readJson,
    labelNotice,
    showNotice,
    retryFromNotice,
    hideNotice,
  };
})();
