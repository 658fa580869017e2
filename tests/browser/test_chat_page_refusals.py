"""Refusals on the chat page, explained in plain words with a countdown and a retry: maintenance, the gate's rate
limit, and the edge's. The edge's test empties nginx's per-address allowance, which takes about half a minute to
refill (EDGE_BURST at EDGE_RATE_PER_SECOND), so it stays the last test of the session: pytest runs the modules in
name order, this one last."""

from __future__ import annotations

from chat_page_harness import ROOMY_ANONYMOUS_TIER, ChatPageTest


def test_maintenance_is_explained_and_retried(chat_page: ChatPageTest) -> None:
    chat_page.open()
    chat_page.admin_post("/admin/intake/pause")
    try:
        index = chat_page.send("Is anyone there during maintenance?")
        page = chat_page.session.wait_until("the maintenance explanation shows", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'maintenance'
  && !document.getElementById('countdown').hidden && document.getElementById('countdown').textContent;
""", 20)
        assert "Trying again in" in page, page
        page = chat_page.read()
        assert "maintenance" in page["notice"]["text"], page["notice"]
        assert page["connection"] == "waiting-to-retry" and page["stopVisible"], page
        chat_page.screenshot("maintenance")
    finally:
        chat_page.admin_post("/admin/intake/resume")
    chat_page.session.click("#retry-now")
    page = chat_page.wait_for_answer(index)
    assert page["notice"] is None, page


def test_the_rate_limit_counts_down_and_retries_by_itself(chat_page: ChatPageTest) -> None:
    chat_page.open()
    # One chat, then one every 5 s.
    chat_page.set_anonymous_tier({"rate_per_second": 0.2, "burst": 1})
    try:
        first = chat_page.send("First of two quick questions.")
        chat_page.wait_for_answer(first)
        chat_page.record_notices()
        second = chat_page.send("Second of two quick questions.")
        chat_page.session.wait_until("the rate-limit countdown shows", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'rate_limited' && notice.dataset.layer === 'gate';
""", 20)
        chat_page.screenshot("rate-limited")
        page = chat_page.wait_for_answer(second, 30)
        seen = chat_page.notices_seen()
        countdowns = {notice["countdown"] for notice in seen if notice["code"] == "rate_limited"}
        assert any("faster than this service allows" in notice["text"] for notice in seen), seen
        # The countdown went down, second by second, before the retry.
        assert len(countdowns) >= 2 and all("Trying again in" in value for value in countdowns), countdowns
        assert page["notice"] is None, page
    finally:
        chat_page.set_anonymous_tier(ROOMY_ANONYMOUS_TIER)


def test_an_edge_refusal_is_explained_and_retried(chat_page: ChatPageTest) -> None:
    chat_page.open()
    chat_page.record_notices()
    index = sum(1 for bubble in chat_page.read()["bubbles"] if bubble["role"] == "assistant")
    # The page's own origin floods nginx past its per-address burst, then the user sends at once.
    refused = chat_page.session.run_async("""
const done = arguments[arguments.length - 1];
Promise.all(Array.from({length: 150}, () => fetch('/api/chat-limits').then((answer) => answer.status)))
  .then((statuses) => {
    document.getElementById('input').value = 'Sent right after a flood from my address.';
    document.getElementById('composer').requestSubmit();
    done(statuses.filter((status) => status === 429).length);
  });
""")
    assert refused > 0, "the flood never reached the edge's limit"
    page = chat_page.wait_for_answer(index, 30)
    seen = chat_page.notices_seen()
    assert any(notice["layer"] == "edge" and notice["code"] == "rate_limited" and "front door" in notice["text"]
               for notice in seen), seen
    assert page["notice"] is None, page
