// The chat page's wiring, loaded last: Enter sends, Shift+Enter starts a new line, Escape and the Stop button
// stop an answer, the notice's buttons, the online/offline status, and the start (the limits, then the saved
// conversation and any answer still coming). What each part does lives in the chat-*.js files chat-view.js lists.
"use strict";

(() => {
  const { page, setConnection, setBusy } = chat.view;
  const { retryFromNotice, hideNotice } = chat.refusals;
  const conversation = chat.conversation;
  const { startTurn, resumeTurn, stopTurn } = chat.turn;

  page.form.addEventListener("submit", (submitEvent) => {
    submitEvent.preventDefault();
    const text = page.input.value.trim();
    if (!text || conversation.currentTurn) return;
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
    if (keyEvent.key === "Escape" && conversation.currentTurn) stopTurn();
  });

  page.stop.addEventListener("click", () => stopTurn());
  page.retryNow.addEventListener("click", () => retryFromNotice());
  page.dismiss.addEventListener("click", () => hideNotice());

  window.addEventListener("offline", () => setConnection("offline", "Offline: waiting for the network"));
  window.addEventListener("online", () => {
    if (!conversation.currentTurn) setConnection("ready", "Ready");
  });

  (async () => {
    await conversation.loadLimits();
    setConnection("ready", navigator.onLine === false ? "Offline: waiting for the network" : "Ready");
    const running = conversation.restoreConversation();
    if (running) resumeTurn(running);
    setBusy(conversation.currentTurn !== null);
  })();
})();
