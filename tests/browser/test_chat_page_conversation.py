"""The chat page's conversation in the browser: a conversation longer than chat.max_messages is trimmed (and
kept across a reload), Stop cancels the chat upstream (mock-llm counts the cancelled request), a reload mid-answer
picks the answer up, and a chat that no longer exists is explained."""

from __future__ import annotations

import time
import uuid

from chat_page_harness import MAX_MESSAGES, ChatPageTest


def test_a_conversation_longer_than_the_limit_is_trimmed(chat_page: ChatPageTest) -> None:
    chat_page.open()
    sent = []
    for turn in range(4):
        # Shift+Enter makes a new line inside the message; Enter sends.
        text = f"Turn {turn + 1} of a long conversation.\nSecond line of turn {turn + 1}."
        index = chat_page.send(text)
        page = chat_page.wait_for_answer(index)
        sent.append(text)
        assert page["notice"] is None, f"turn {turn + 1}: {page['notice']}"
        assert chat_page.answer_text(page, index) == chat_page.expected_answer(text), page
    users = [bubble["text"] for bubble in page["bubbles"] if bubble["role"] == "user"]
    assert users[-4:] == sent, users
    # 4 turns are 7 messages with the last question, over the limit of 4: the oldest are dropped, and said so.
    assert page["trimNote"] and "oldest" in page["trimNote"] and str(MAX_MESSAGES) in page["trimNote"], page
    chat_page.screenshot("trimmed-history")
    # A reload keeps the conversation.
    bubbles_before = page["bubbles"]
    chat_page.open(keep_conversation=True)
    assert chat_page.read()["bubbles"] == bubbles_before
    chat_page.assert_console_clean()


def test_stop_cancels_the_upstream_call(chat_page: ChatPageTest) -> None:
    chat_page.open()
    cancelled_before = chat_page.mock_stats()["cancelled_by_client"]
    deletes_before = chat_page.cancels_answered()
    index = chat_page.send("Tell me a very long story. [[mock tokens=600 inter_token_ms=40]]")
    chat_page.wait_until_answer(index, "the long answer has begun", "bubble.textContent.length > 20")
    chat_page.session.click("#stop")
    page = chat_page.read()
    assistant = [bubble for bubble in page["bubbles"] if bubble["role"] == "assistant"][index]
    assert assistant["state"] == "stopped", page
    assert not page["sendDisabled"] and not page["stopVisible"], page
    chat_page.screenshot("stopped")
    deadline = time.monotonic() + 20
    while chat_page.mock_stats()["cancelled_by_client"] <= cancelled_before:
        assert time.monotonic() < deadline, f"mock-llm never counted a cancelled request: {chat_page.mock_stats()}"
        time.sleep(0.2)
    # Stop cancelled the chat itself (DELETE), not only closed the stream (which the workers notice too, later).
    assert chat_page.cancels_answered() == deletes_before + 1, "Stop sent no DELETE /api/chats/{id}"
    # The text stops growing: the stream is closed.
    stopped_text = assistant["text"]
    time.sleep(1)
    page = chat_page.read()
    assert [bubble for bubble in page["bubbles"] if bubble["role"] == "assistant"][index]["text"] == stopped_text


def test_a_reload_mid_answer_picks_the_answer_up(chat_page: ChatPageTest) -> None:
    chat_page.open()
    text = "A story I will reload through. [[mock tokens=80 inter_token_ms=40]]"
    index = chat_page.send(text)
    chat_page.wait_until_answer(index, "the answer has begun", "bubble.textContent.length > 10")
    chat_page.session.reload()
    page = chat_page.wait_for_answer(index)
    assert chat_page.answer_text(page, index) == chat_page.expected_answer(text), "the answer, whole and once"


def test_a_lost_chat_is_explained(chat_page: ChatPageTest) -> None:
    chat_page.open()
    missing = str(uuid.uuid4())
    chat_page.session.run("""
sessionStorage.setItem('traffic-dam-chat', JSON.stringify({history: [], running: {
  text: 'A question from a chat that no longer exists', chat: {id: arguments[0], eventsUrl: arguments[1]}}}));
""", missing, f"/api/chats/{missing}/events")
    chat_page.session.reload()
    page = chat_page.session.wait_until("the page explains the lost chat", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'chat_not_found' && document.getElementById('notice-text').textContent;
""", 20)
    assert "no longer available" in page, page
    state = chat_page.read()
    assert not state["sendDisabled"] and state["connection"] == "failed", state
    chat_page.screenshot("lost-chat")
    chat_page.session.run("sessionStorage.clear()")
