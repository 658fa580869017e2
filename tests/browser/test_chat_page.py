"""The chat page in a real browser (Debian's Chromium, headless, through chromium-driver) against the stack as
`make run` starts it (conftest.py): a user types, presses Enter and reads, and the test checks what the page shows.
Here: the page and its files carry a strict policy, an answer streams whole, the queue position shows until the
answer, markup in an answer stays text, a phone-sized window fits, and a gateway alone serves the page. The
conversation (trimming, Stop, a reload, a lost chat) is in test_chat_page_conversation.py, the refusals in
test_chat_page_refusals.py. Each state is saved as a screenshot in target/browser-test/.

Run: make test-browser (pytest; conftest.py starts the stack and the browser once for every module; `-k stop`
picks tests by name); needs chromium and chromium-driver (make deps)."""

from __future__ import annotations

import urllib.request

from chat_page_harness import (
    CONTENT_SECURITY_POLICY, MAX_MESSAGES, ROOT, WINDOW, ChatPageTest, http_head, http_json,
)

# The page's stylesheet and scripts: every file beside chat.html, which nginx serves from this directory.
STATIC_DIR = ROOT / "crates" / "gateway" / "static"


def test_the_page_and_its_files_carry_a_strict_policy(chat_page: ChatPageTest) -> None:
    html = urllib.request.urlopen(f"{chat_page.stack.base_url}/", timeout=20).read().decode()
    assets = [part.split('"')[0] for part in html.split('"/static/')[1:]]
    beside_the_page = sorted(path.name for path in STATIC_DIR.iterdir() if path.name != "chat.html")
    assert sorted(asset.split("?")[0] for asset in assets) == beside_the_page, assets
    for base, who in [(chat_page.stack.base_url, "nginx"), (f"http://127.0.0.1:{chat_page.stack.ports.gateways[0]}", "gateway")]:
        status, headers = http_head(f"{base}/")
        assert status == 200, f"{who}: GET / answered {status}"
        assert headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, (who, headers)
        assert headers.get("x-content-type-options") == "nosniff", (who, headers)
        assert headers.get("cache-control") == "no-cache", (who, headers)
        assert headers.get("content-type", "").startswith("text/html"), (who, headers)
        for asset in assets:
            status, headers = http_head(f"{base}/static/{asset}")
            assert status == 200, f"{who}: /static/{asset} answered {status}"
            assert "immutable" in headers.get("cache-control", ""), (who, asset, headers)
            assert headers.get("x-content-type-options") == "nosniff", (who, asset, headers)
            expected_type = "text/css" if asset.startswith("chat.css") else "javascript"
            assert expected_type in headers.get("content-type", ""), (who, asset, headers)
    status, _, body = http_json("GET", f"http://127.0.0.1:{chat_page.stack.ports.gateways[0]}/static/missing.js")
    assert status == 404 and body["error"]["code"] == "route_not_found", (status, body)
    status, _, limits = http_json("GET", f"{chat_page.stack.base_url}/api/chat-limits")
    assert status == 200 and limits["max_messages"] == MAX_MESSAGES, (status, limits)


def test_a_message_streams_its_whole_answer(chat_page: ChatPageTest) -> None:
    chat_page.open()
    text = "Tell me about the river at dawn."
    index = chat_page.send(text)
    # Mid-answer: some words shown, the answer still streaming (the picture on the README).
    chat_page.wait_until_answer(index, "the answer is streaming",
                                "bubble.dataset.state === 'streaming' && bubble.textContent.split(' ').length >= 12")
    chat_page.screenshot("answering")
    page = chat_page.wait_for_answer(index)
    chat_page.screenshot("answered")
    assert chat_page.answer_text(page, index) == chat_page.expected_answer(text), page
    user_bubbles = [bubble for bubble in page["bubbles"] if bubble["role"] == "user"]
    assert user_bubbles[-1]["text"] == text, page
    assert "instance " in page["details"] and "tokens in" in page["details"], page["details"]
    assert "admission" in page["details"], page["details"]
    assert page["notice"] is None and not page["sendDisabled"] and not page["stopVisible"], page
    assert page["focused"] == "input", "after an answer the keyboard is back in the text box"
    chat_page.assert_console_clean()


def test_the_queue_position_is_shown_until_the_answer(chat_page: ChatPageTest) -> None:
    chat_page.open()
    gateway = f"http://127.0.0.1:{chat_page.stack.ports.gateways[0]}"
    # Another caller's two slow chats take the only worker slot and the head of the line.
    for number in range(2):
        status, _, body = http_json("POST", f"{gateway}/api/chats",
                                    {"messages": [{"role": "user", "content":
                                                   f"Ahead in line {number} [[mock ttft_ms=2500 tokens=3]]"}]},
                                    headers={"X-Forwarded-For": "10.20.30.40"})
        assert status == 202, (status, body)
    text = "Am I in line?"
    index = chat_page.send(text)
    page = chat_page.session.wait_until("the page shows the queue position", """
const connection = document.getElementById('connection');
return connection.dataset.state === 'queued' && / in line/.test(connection.textContent) && connection.textContent;
""", 20)
    assert "number" in page, page
    chat_page.screenshot("queued")
    page = chat_page.wait_for_answer(index)
    assert chat_page.answer_text(page, index) == chat_page.expected_answer(text), page


def test_markup_in_an_answer_is_shown_as_text(chat_page: ChatPageTest) -> None:
    chat_page.open()
    text = "Show me some markup. [[mock markup=true tokens=8]]"
    index = chat_page.send(text)
    page = chat_page.wait_for_answer(index)
    answer = chat_page.answer_text(page, index)
    assert answer == chat_page.expected_answer(text), answer
    assert "<script>" in answer and "<img src=x onerror=" in answer, answer
    elements = chat_page.session.run("return document.querySelectorAll('#log script, #log img, #log b').length")
    assert elements == 0, "markup from the model became elements"
    assert page["title"] == "Traffic Dam chat", f"a script from the answer ran: title {page['title']!r}"
    chat_page.screenshot("markup-as-text")
    chat_page.assert_console_clean()


def test_a_phone_sized_window_fits(chat_page: ChatPageTest) -> None:
    chat_page.session.set_window_size(390, 760)
    try:
        chat_page.open()
        index = chat_page.send("Hello from a phone.")
        chat_page.wait_for_answer(index)
        layout = chat_page.session.run("""
const input = document.getElementById('input').getBoundingClientRect();
const send = document.getElementById('send').getBoundingClientRect();
return {overflow: document.documentElement.scrollWidth - window.innerWidth, inputBottom: input.bottom,
        sendRight: send.right, width: window.innerWidth, height: window.innerHeight};
""")
        assert layout["overflow"] <= 0, f"the page scrolls sideways: {layout}"
        assert layout["inputBottom"] <= layout["height"] and layout["sendRight"] <= layout["width"], layout
        chat_page.screenshot("phone")
    finally:
        chat_page.session.set_window_size(*WINDOW)


def test_a_gateway_alone_serves_the_page(chat_page: ChatPageTest) -> None:
    gateway = f"http://127.0.0.1:{chat_page.stack.ports.gateways[1]}"
    chat_page.open(gateway)
    text = "Hello from the gateway alone."
    index = chat_page.send(text)
    page = chat_page.wait_for_answer(index)
    assert chat_page.answer_text(page, index) == chat_page.expected_answer(text), page
    chat_page.screenshot("gateway-alone")
    chat_page.assert_console_clean()
