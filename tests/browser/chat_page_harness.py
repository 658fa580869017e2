"""The chat page in a real browser: Debian's Chromium, headless, driven through chromium-driver (WebDriver), against
the stack as `make run` starts it (deploy/topology.toml: nginx, 2 gateways, 1 worker taking one chat at a time,
mock-llm, the dam, redis-server). A user types, presses Enter and reads; the test checks what the page shows:
the streamed answer, the queue position, refusals explained with a countdown and a retry (maintenance, the gate's
rate limit, the edge's), Stop (mock-llm counts the cancelled request), markup shown as text, a conversation longer
than chat.max_messages, a reload mid-answer, a chat that no longer exists, a phone-sized window, and the page served
by a gateway alone. Each state is saved as a screenshot in target/browser-test/.

Run: make test-browser (pytest; conftest.py starts the stack and the browser once; `-k stop` picks tests by name);
needs chromium and chromium-driver (make deps)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_stack import Stack, pick_ports  # noqa: E402 - beside the run script
from webdriver import ENTER, RELEASE_MODIFIERS, SHIFT, ChromeDriver, Session  # noqa: E402

OUTPUT_DIR = ROOT / "target" / "browser-test"
START_TIMEOUT_S = float(os.environ.get("BROWSER_TEST_START_TIMEOUT_S", "900"))
# One chat carries at most this many messages here, so a short conversation already needs trimming.
MAX_MESSAGES = 4
# The page's policy, as crates/gateway/src/chat_page.rs and the nginx template send it.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# nginx's per-address limit in this test: far above what the page sends, low enough for a flood from the page to
# empty it in a second.
EDGE_RATE_PER_SECOND = 2
EDGE_BURST = 60
# The gate's anonymous tier while the test runs (every request here is one anonymous caller, 127.0.0.1).
ROOMY_ANONYMOUS_TIER = {"rate_per_second": 50, "burst": 100, "max_active_chats": 10}
ANSWER_TIMEOUT_S = 60
WINDOW = (900, 680)

# What the page shows, read in one go.
READ_PAGE = """
const byId = (id) => document.getElementById(id);
const notice = byId('notice');
const countdown = byId('countdown');
const trimNote = byId('trim-note');
return {
  connection: byId('connection').dataset.state,
  connectionText: byId('connection').textContent,
  notice: notice.hidden ? null : {
    kind: notice.dataset.kind, code: notice.dataset.code, layer: notice.dataset.layer,
    text: byId('notice-text').textContent, countdown: countdown.hidden ? null : countdown.textContent,
  },
  bubbles: [...document.querySelectorAll('#log .message')].map((bubble) => ({
    role: bubble.classList.contains('user') ? 'user' : 'assistant',
    state: bubble.dataset.state || '',
    text: bubble.textContent,
  })),
  statusLines: [...document.querySelectorAll('#log .message-status')].map((line) => line.textContent),
  details: byId('details').textContent,
  trimNote: trimNote.hidden ? null : trimNote.textContent,
  sendDisabled: byId('send').disabled,
  stopVisible: !byId('stop').hidden,
  focused: document.activeElement ? document.activeElement.id : null,
  title: document.title,
};
"""

# Records every notice the page shows from now on, so one that lasts a second is not missed between polls.
RECORD_NOTICES = """
window.noticesSeen = [];
const notice = document.getElementById('notice');
const record = () => {
  if (!notice.hidden) {
    window.noticesSeen.push({code: notice.dataset.code, layer: notice.dataset.layer,
      text: document.getElementById('notice-text').textContent,
      countdown: document.getElementById('countdown').textContent});
  }
};
new MutationObserver(record).observe(notice, {attributes: true, childList: true, subtree: true, characterData: true});
"""


def http_json(method: str, url: str, body: object | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as failure:
        raw = failure.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return failure.code, dict(failure.headers), parsed


def http_head(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            response.read()
            return response.status, {name.lower(): value for name, value in response.headers.items()}
    except urllib.error.HTTPError as failure:
        return failure.code, {name.lower(): value for name, value in failure.headers.items()}


class ChatPageTest:
    """The stack, the browser and the helpers the checks share."""

    def __init__(self, stack: Stack, session: Session):
        self.stack = stack
        self.session = session
        self.admin = f"http://127.0.0.1:{stack.ports.admin}"
        self.mock = f"http://127.0.0.1:{stack.ports.mock_llm}"
        self.screenshot_count = 0

    # ---- the browser ----

    def open(self, base_url: str | None = None, keep_conversation: bool = False) -> None:
        """Loads the page; a fresh conversation unless `keep_conversation` (the page keeps one per tab)."""
        self.session.open(f"{base_url or self.stack.base_url}/")
        if not keep_conversation:
            self.session.run("sessionStorage.clear()")
            self.session.reload()
        self.session.wait_until("the page is ready", "return document.getElementById('connection').dataset.state"
                                " === 'ready' && document.activeElement.id === 'input'", 20)

    def read(self) -> dict:
        return self.session.run(READ_PAGE)

    def screenshot(self, name: str) -> None:
        self.screenshot_count += 1
        self.session.screenshot(OUTPUT_DIR / f"{self.screenshot_count:02d}-{name}.png")

    def send(self, text: str) -> int:
        """Types `text` and presses Enter, as a user does; returns how many assistant bubbles there were before."""
        before = sum(1 for bubble in self.read()["bubbles"] if bubble["role"] == "assistant")
        self.session.type("#input", text.replace("\n", SHIFT + ENTER + RELEASE_MODIFIERS) + ENTER)
        return before

    def wait_for_answer(self, assistant_index: int, timeout_s: float = ANSWER_TIMEOUT_S) -> dict:
        """Waits until assistant bubble `assistant_index` is done; returns the page then."""
        script = """
const bubbles = [...document.querySelectorAll('#log .message.assistant')];
const bubble = bubbles[arguments[0]];
return bubble && bubble.dataset.state === 'done' && document.getElementById('connection').dataset.state === 'ready';
"""
        try:
            self.session.wait_until(f"answer {assistant_index + 1} is done", script, timeout_s, assistant_index)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\npage: {json.dumps(self.read(), indent=1)[:3000]}") from None
        return self.read()

    def wait_until_answer(self, assistant_index: int, what: str, condition: str) -> None:
        """Waits until assistant bubble `assistant_index` exists and the JavaScript `condition` on `bubble` holds."""
        self.session.wait_until(what, f"""
const bubble = document.querySelectorAll('#log .message.assistant')[arguments[0]];
return Boolean(bubble && ({condition}));
""", ANSWER_TIMEOUT_S, assistant_index)

    def answer_text(self, page: dict, assistant_index: int) -> str:
        return [bubble for bubble in page["bubbles"] if bubble["role"] == "assistant"][assistant_index]["text"]

    def assert_console_clean(self) -> None:
        """No script error and no Content-Security-Policy violation; refused requests (429, 404) are expected."""
        bad = [entry["message"] for entry in self.session.console()
               if any(marker in entry.get("message", "")
                      for marker in ("Content Security Policy", "Uncaught", "SyntaxError", "TypeError"))]
        assert not bad, f"the console shows errors: {bad}"

    def record_notices(self) -> None:
        self.session.run(RECORD_NOTICES)

    def notices_seen(self) -> list[dict]:
        return self.session.run("return window.noticesSeen || []")

    # ---- the services ----

    def expected_answer(self, user_text: str) -> str:
        """mock-llm's answer to the same last user message, asked directly."""
        status, _, body = http_json("POST", f"{self.mock}/v1/chat/completions",
                                    {"model": "mock-1", "messages": [{"role": "user", "content": user_text}]})
        assert status == 200, f"mock-llm answered {status}: {body}"
        return body["choices"][0]["message"]["content"]

    def mock_stats(self) -> dict:
        status, _, body = http_json("GET", f"{self.mock}/stats")
        assert status == 200, body
        return body

    def cancels_answered(self) -> float:
        """`DELETE /api/chats/{id}` requests the gateways answered, from their /metrics."""
        total = 0.0
        for port in self.stack.ports.gateways:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
            for line in text.splitlines():
                if (line.startswith("dam_gateway_http_requests_total{") and 'method="DELETE"' in line
                        and 'route="/api/chats/{id}"' in line):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def set_anonymous_tier(self, tier: dict) -> None:
        status, _, body = http_json("PUT", f"{self.admin}/admin/limits", {"tiers": {"anonymous": tier}})
        assert status == 200, f"PUT /admin/limits answered {status}: {body}"
        # Gateways and workers apply a change within a second.
        time.sleep(1.5)

    def admin_post(self, path: str) -> None:
        status, _, body = http_json("POST", f"{self.admin}{path}")
        assert status == 200, f"POST {path} answered {status}: {body}"


# ---- the stack and the browser ----


@pytest.fixture(scope="module")
def chat_page(request: pytest.FixtureRequest):
    """The `make run` topology (1 worker taking one chat at a time, chats of at most MAX_MESSAGES messages, nginx's
    edge limits low enough to flood from the page) and a headless Chromium session, for every test here."""
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    OUTPUT_DIR.mkdir(parents=True)
    run_dir = ROOT / ".run" / f"browser-{os.getpid()}-{int(time.time())}"
    stack = Stack(
        run_dir,
        pick_ports(2),
        profile="debug",
        workers=1,
        settings={
            "DAM_WORKER__CONCURRENCY": "1",
            "DAM_CHAT__MAX_MESSAGES": str(MAX_MESSAGES),
            # About 2 s per answer, long enough to see it stream.
            "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "40",
            "EDGE_RATE_PER_SECOND": str(EDGE_RATE_PER_SECOND),
            "EDGE_BURST": str(EDGE_BURST),
        },
        start_timeout_s=START_TIMEOUT_S,
    )
    print(f"\nbrowser test: run dir {run_dir}; screenshots in {OUTPUT_DIR}", flush=True)
    driver = None
    session = None
    came_up = False
    stack.start()
    try:
        stack.wait_until_up()
        driver = ChromeDriver(OUTPUT_DIR / "chromedriver.log")
        session = driver.new_session(*WINDOW)
        page_test = ChatPageTest(stack, session)
        page_test.set_anonymous_tier(ROOMY_ANONYMOUS_TIER)
        came_up = True
        yield page_test
    finally:
        if session is not None:
            session.close()
        if driver is not None:
            driver.stop()
        stack.emergency_stop()
        if request.session.testsfailed or not came_up:
            print(f"\nsupervisor output:\n{stack.output()[-3000:]}\nlogs kept in {run_dir / 'logs'}", flush=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            stack.output_path.unlink(missing_ok=True)


# ---- the tests ----

def test_the_page_and_its_files_carry_a_strict_policy(chat_page: ChatPageTest) -> None:
    html = urllib.request.urlopen(f"{chat_page.stack.base_url}/", timeout=20).read().decode()
    assets = [part.split('"')[0] for part in html.split('"/static/')[1:]]
    assert sorted(asset.split("?")[0] for asset in assets) == ["chat.css", "chat.js"], assets
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
