// The conversation: the finished turns and the turn in progress, the limits one chat must fit (GET
// /api/chat-limits), the trimming of the oldest turns to fit them (and the note saying so), and keeping it all in
// sessionStorage so that a reload finds it again.
"use strict";

chat.conversation = (() => {
  const { page, addBubble, setBusy } = chat.view;
  const { readJson } = chat.refusals;

  // Used until GET /api/chat-limits answers: the gateway's defaults.
  const DEFAULT_LIMITS = { max_messages: 64, max_message_chars: 32000, max_body_bytes: 262144 };
  const STORAGE_KEY = "traffic-dam-chat";

  const conversation = {
    limits: DEFAULT_LIMITS,
    // The finished turns, as the API takes them: {role, content}.
    history: [],
    // The turn in progress, or null.
    currentTurn: null,
  };

  // The messages to send for a new user text: the history with the oldest turns dropped until the request fits
  // the limits. Returns {messages, dropped}.
  function messagesFor(text) {
    const { limits } = conversation;
    const all = [...conversation.history, { role: "user", content: text }]
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

  function showTrimNote(dropped) {
    page.trimNote.hidden = dropped === 0;
    page.trimNote.textContent = dropped === 0 ? "" :
      `The oldest ${dropped} message${dropped === 1 ? " is" : "s are"} no longer sent to the model: ` +
      `one chat carries at most ${conversation.limits.max_messages} messages.`;
  }

  function saveConversation() {
    const turn = conversation.currentTurn;
    const running = turn && turn.chat && !turn.finished ? { text: turn.text, chat: turn.chat } : null;
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ history: conversation.history, running }));
    } catch (storageUnavailable) {
      // Private modes may refuse storage; the page works without it.
    }
  }

  // Shows the saved conversation again; returns the turn whose answer was still coming when the page was left,
  // {text, chat}, or null.
  function restoreConversation() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    } catch (unreadable) {
      saved = null;
    }
    if (!saved || !Array.isArray(saved.history)) return null;
    for (const message of saved.history) {
      if (typeof message.content !== "string" || !["user", "assistant"].includes(message.role)) continue;
      conversation.history.push({ role: message.role, content: message.content });
      const { bubble } = addBubble(message.role, message.content);
      if (message.role === "assistant") bubble.dataset.state = "done";
    }
    const running = saved.running;
    if (running && typeof running.text === "string" && running.chat && typeof running.chat.eventsUrl === "string") {
      return running;
    }
    return null;
  }

  // The question and its answer (whole, or as far as it came before Stop) join the history later chats carry.
  function keepAnswer(turn) {
    conversation.history.push({ role: "user", content: turn.text }, { role: "assistant", content: turn.answerText });
  }

  // The turn is over, however it ended: a new one may start, and the page is saved without it.
  function endTurn(turn) {
    turn.finished = true;
    if (conversation.currentTurn === turn) conversation.currentTurn = null;
    setBusy(false);
    saveConversation();
  }

  async function loadLimits() {
    try {
      const response = await fetch("/api/chat-limits");
      const body = response.ok ? await readJson(response) : null;
      if (body && Number.isInteger(body.max_messages) && Number.isInteger(body.max_message_chars)) {
        conversation.limits = { ...DEFAULT_LIMITS, ...body };
      }
    } catch (unreachable) {
      // The defaults serve; a refusal will say what is wrong.
    }
    page.input.maxLength = conversation.limits.max_message_chars;
  }

  return Object.assign(conversation, {
    messagesFor,
    showTrimNote,
    saveConversation,
    restoreConversation,
    keepAnswer,
    endTurn,
    loadLimits,
  });
})();
