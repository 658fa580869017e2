"""The chat page in a real browser: Debian's Chromium, headless, driven through chromium-driver (WebDriver), against
the stack as `make run` starts it (deploy/run-local.sh: nginx, 2 gateways, 1 worker taking one chat at a time,
mock-llm, the dam, redis-server). A user types, presses Enter and reads; the test checks what the page shows:
the streamed answer, the queue position, refusals explained with a countdown and a retry (maintenance, the gate's
rate limit, the edge's), Stop (mock-llm counts the cancelled request), markup shown as text, a conversation longer
than chat.max_messages, a reload mid-answer, a chat that no longer exists, a phone-sized window, and the page served
by a gateway alone. Each state is saved as a screenshot in target/browser-test/.

Run: python3 tests/browser/check_chat_page.py [WORD ...] (make test-browser), where WORDs pick the checks whose
function names contain them; needs chromium and chromium-driver (make deps)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_stack import Stack, pick_ports  # noqa: E402 - beside the run script
from webdriver import ENTER, RELEASE_MODIFIERS, SHIFT, ChromeDriver, Session, WebDriverError  # noqa: E402

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


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, function) -> None:
        started = time.monotonic()
        try:
            function()
        except Exception:  # noqa: BLE001 - every failure is reported with its traceback, then the next check runs
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s)\n{traceback.format_exc()}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)


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


# ---- the checks ----

def check_the_page_and_its_files_carry_a_strict_policy(test: ChatPageTest) -> None:
    html = urllib.request.urlopen(f"{test.stack.base_url}/", timeout=20).read().decode()
    assets = [part.split('"')[0] for part in html.split('"/static/')[1:]]
    assert sorted(asset.split("?")[0] for asset in assets) == ["chat.css", "chat.js"], assets
    for base, who in [(test.stack.base_url, "nginx"), (f"http://127.0.0.1:{test.stack.ports.gateways[0]}", "gateway")]:
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
    status, _, body = http_json("GET", f"http://127.0.0.1:{test.stack.ports.gateways[0]}/static/missing.js")
    assert status == 404 and body["error"]["code"] == "route_not_found", (status, body)
    status, _, limits = http_json("GET", f"{test.stack.base_url}/api/chat-limits")
    assert status == 200 and limits["max_messages"] == MAX_MESSAGES, (status, limits)


def check_a_message_streams_its_whole_answer(test: ChatPageTest) -> None:
    test.open()
    text = "Tell me about the river at dawn."
    index = test.send(text)
    # Mid-answer: some words shown, the answer still streaming (the picture on the README).
    test.session.wait_until("the answer is streaming", """
const bubble = document.querySelectorAll('#log .message.assistant')[arguments[0]];
return bubble && bubble.dataset.state === 'streaming' && bubble.textContent.split(' ').length >= 12;
""", ANSWER_TIMEOUT_S, index)
    test.screenshot("answering")
    page = test.wait_for_answer(index)
    test.screenshot("answered")
    assert test.answer_text(page, index) == test.expected_answer(text), page
    user_bubbles = [bubble for bubble in page["bubbles"] if bubble["role"] == "user"]
    assert user_bubbles[-1]["text"] == text, page
    assert "instance " in page["details"] and "tokens in" in page["details"], page["details"]
    assert "admission" in page["details"], page["details"]
    assert page["notice"] is None and not page["sendDisabled"] and not page["stopVisible"], page
    assert page["focused"] == "input", "after an answer the keyboard is back in the text box"
    test.assert_console_clean()


def check_a_conversation_longer_than_the_limit_is_trimmed(test: ChatPageTest) -> None:
    test.open()
    sent = []
    for turn in range(4):
        # Shift+Enter makes a new line inside the message; Enter sends.
        text = f"Turn {turn + 1} of a long conversation.\nSecond line of turn {turn + 1}."
        index = test.send(text)
        page = test.wait_for_answer(index)
        sent.append(text)
        assert page["notice"] is None, f"turn {turn + 1}: {page['notice']}"
        assert test.answer_text(page, index) == test.expected_answer(text), page
    users = [bubble["text"] for bubble in page["bubbles"] if bubble["role"] == "user"]
    assert users[-4:] == sent, users
    # 4 turns are 7 messages with the last question, over the limit of 4: the oldest are dropped, and said so.
    assert page["trimNote"] and "oldest" in page["trimNote"] and str(MAX_MESSAGES) in page["trimNote"], page
    test.screenshot("trimmed-history")
    # A reload keeps the conversation.
    bubbles_before = page["bubbles"]
    test.open(keep_conversation=True)
    assert test.read()["bubbles"] == bubbles_before
    test.assert_console_clean()


def check_the_queue_position_is_shown_until_the_answer(test: ChatPageTest) -> None:
    test.open()
    gateway = f"http://127.0.0.1:{test.stack.ports.gateways[0]}"
    # Another caller's two slow chats take the only worker slot and the head of the line.
    for number in range(2):
        status, _, body = http_json("POST", f"{gateway}/api/chats",
                                    {"messages": [{"role": "user", "content":
                                                   f"Ahead in line {number} [[mock ttft_ms=2500 tokens=3]]"}]},
                                    headers={"X-Forwarded-For": "10.20.30.40"})
        assert status == 202, (status, body)
    text = "Am I in line?"
    index = test.send(text)
    page = test.session.wait_until("the page shows the queue position", """
const connection = document.getElementById('connection');
return connection.dataset.state === 'queued' && / in line/.test(connection.textContent) && connection.textContent;
""", 20)
    assert "number" in page, page
    test.screenshot("queued")
    page = test.wait_for_answer(index)
    assert test.answer_text(page, index) == test.expected_answer(text), page


def check_maintenance_is_explained_and_retried(test: ChatPageTest) -> None:
    test.open()
    test.admin_post("/admin/intake/pause")
    try:
        index = test.send("Is anyone there during maintenance?")
        page = test.session.wait_until("the maintenance explanation shows", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'maintenance'
  && !document.getElementById('countdown').hidden && document.getElementById('countdown').textContent;
""", 20)
        assert "Trying again in" in page, page
        page = test.read()
        assert "maintenance" in page["notice"]["text"], page["notice"]
        assert page["connection"] == "waiting-to-retry" and page["stopVisible"], page
        test.screenshot("maintenance")
    finally:
        test.admin_post("/admin/intake/resume")
    test.session.click("#retry-now")
    page = test.wait_for_answer(index)
    assert page["notice"] is None, page


def check_the_rate_limit_counts_down_and_retries_by_itself(test: ChatPageTest) -> None:
    test.open()
    # One chat, then one every 5 s.
    test.set_anonymous_tier({"rate_per_second": 0.2, "burst": 1})
    try:
        first = test.send("First of two quick questions.")
        test.wait_for_answer(first)
        test.record_notices()
        second = test.send("Second of two quick questions.")
        test.session.wait_until("the rate-limit countdown shows", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'rate_limited' && notice.dataset.layer === 'gate';
""", 20)
        test.screenshot("rate-limited")
        page = test.wait_for_answer(second, 30)
        seen = test.notices_seen()
        countdowns = {notice["countdown"] for notice in seen if notice["code"] == "rate_limited"}
        assert any("faster than this service allows" in notice["text"] for notice in seen), seen
        # The countdown went down, second by second, before the retry.
        assert len(countdowns) >= 2 and all("Trying again in" in value for value in countdowns), countdowns
        assert page["notice"] is None, page
    finally:
        test.set_anonymous_tier(ROOMY_ANONYMOUS_TIER)


def check_stop_cancels_the_upstream_call(test: ChatPageTest) -> None:
    test.open()
    cancelled_before = test.mock_stats()["cancelled_by_client"]
    deletes_before = test.cancels_answered()
    index = test.send("Tell me a very long story. [[mock tokens=600 inter_token_ms=40]]")
    test.session.wait_until("the long answer has begun", """
const bubble = document.querySelectorAll('#log .message.assistant')[arguments[0]];
return bubble && bubble.textContent.length > 20;
""", ANSWER_TIMEOUT_S, index)
    test.session.click("#stop")
    page = test.read()
    assistant = [bubble for bubble in page["bubbles"] if bubble["role"] == "assistant"][index]
    assert assistant["state"] == "stopped", page
    assert not page["sendDisabled"] and not page["stopVisible"], page
    test.screenshot("stopped")
    deadline = time.monotonic() + 20
    while test.mock_stats()["cancelled_by_client"] <= cancelled_before:
        assert time.monotonic() < deadline, f"mock-llm never counted a cancelled request: {test.mock_stats()}"
        time.sleep(0.2)
    # Stop cancelled the chat itself (DELETE), not only closed the stream (which the workers notice too, later).
    assert test.cancels_answered() == deletes_before + 1, "Stop sent no DELETE /api/chats/{id}"
    # The text stops growing: the stream is closed.
    stopped_text = assistant["text"]
    time.sleep(1)
    page = test.read()
    assert [bubble for bubble in page["bubbles"] if bubble["role"] == "assistant"][index]["text"] == stopped_text


def check_markup_in_an_answer_is_shown_as_text(test: ChatPageTest) -> None:
    test.open()
    text = "Show me some markup. [[mock markup=true tokens=8]]"
    index = test.send(text)
    page = test.wait_for_answer(index)
    answer = test.answer_text(page, index)
    assert answer == test.expected_answer(text), answer
    assert "<script>" in answer and "<img src=x onerror=" in answer, answer
    elements = test.session.run("return document.querySelectorAll('#log script, #log img, #log b').length")
    assert elements == 0, "markup from the model became elements"
    assert page["title"] == "Traffic Dam chat", f"a script from the answer ran: title {page['title']!r}"
    test.screenshot("markup-as-text")
    test.assert_console_clean()


def check_a_reload_mid_answer_picks_the_answer_up(test: ChatPageTest) -> None:
    test.open()
    text = "A story I will reload through. [[mock tokens=80 inter_token_ms=40]]"
    index = test.send(text)
    test.session.wait_until("the answer has begun", """
const bubble = document.querySelectorAll('#log .message.assistant')[arguments[0]];
return bubble && bubble.textContent.length > 10;
""", ANSWER_TIMEOUT_S, index)
    test.session.reload()
    page = test.wait_for_answer(index)
    assert test.answer_text(page, index) == test.expected_answer(text), "the answer, whole and once"


def check_a_lost_chat_is_explained(test: ChatPageTest) -> None:
    test.open()
    missing = str(uuid.uuid4())
    test.session.run("""
sessionStorage.setItem('traffic-dam-chat', JSON.stringify({history: [], running: {
  text: 'A question from a chat that no longer exists', chat: {id: arguments[0], eventsUrl: arguments[1]}}}));
""", missing, f"/api/chats/{missing}/events")
    test.session.reload()
    page = test.session.wait_until("the page explains the lost chat", """
const notice = document.getElementById('notice');
return !notice.hidden && notice.dataset.code === 'chat_not_found' && document.getElementById('notice-text').textContent;
""", 20)
    assert "no longer available" in page, page
    state = test.read()
    assert not state["sendDisabled"] and state["connection"] == "failed", state
    test.screenshot("lost-chat")
    test.session.run("sessionStorage.clear()")


def check_a_phone_sized_window_fits(test: ChatPageTest) -> None:
    test.session.set_window_size(390, 760)
    try:
        test.open()
        index = test.send("Hello from a phone.")
        test.wait_for_answer(index)
        layout = test.session.run("""
const input = document.getElementById('input').getBoundingClientRect();
const send = document.getElementById('send').getBoundingClientRect();
return {overflow: document.documentElement.scrollWidth - window.innerWidth, inputBottom: input.bottom,
        sendRight: send.right, width: window.innerWidth, height: window.innerHeight};
""")
        assert layout["overflow"] <= 0, f"the page scrolls sideways: {layout}"
        assert layout["inputBottom"] <= layout["height"] and layout["sendRight"] <= layout["width"], layout
        test.screenshot("phone")
    finally:
        test.session.set_window_size(*WINDOW)


def check_a_gateway_alone_serves_the_page(test: ChatPageTest) -> None:
    gateway = f"http://127.0.0.1:{test.stack.ports.gateways[1]}"
    test.open(gateway)
    text = "Hello from the gateway alone."
    index = test.send(text)
    page = test.wait_for_answer(index)
    assert test.answer_text(page, index) == test.expected_answer(text), page
    test.screenshot("gateway-alone")
    test.assert_console_clean()


def check_an_edge_refusal_is_explained_and_retried(test: ChatPageTest) -> None:
    test.open()
    test.record_notices()
    index = sum(1 for bubble in test.read()["bubbles"] if bubble["role"] == "assistant")
    # The page's own origin floods nginx past its per-address burst, then the user sends at once.
    refused = test.session.run_async("""
const done = arguments[arguments.length - 1];
Promise.all(Array.from({length: 150}, () => fetch('/api/chat-limits').then((answer) => answer.status)))
  .then((statuses) => {
    document.getElementById('input').value = 'Sent right after a flood from my address.';
    document.getElementById('composer').requestSubmit();
    done(statuses.filter((status) => status === 429).length);
  });
""")
    assert refused > 0, "the flood never reached the edge's limit"
    page = test.wait_for_answer(index, 30)
    seen = test.notices_seen()
    assert any(notice["layer"] == "edge" and notice["code"] == "rate_limited" and "front door" in notice["text"]
               for notice in seen), seen
    assert page["notice"] is None, page


def main() -> int:
    report = Report()
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
    print(f"browser test: run dir {run_dir}; screenshots in {OUTPUT_DIR}", flush=True)
    started = time.monotonic()
    driver = None
    session = None
    stack.start()
    try:
        stack.wait_until_up()
        driver = ChromeDriver(OUTPUT_DIR / "chromedriver.log")
        session = driver.new_session(*WINDOW)
        test = ChatPageTest(stack, session)
        test.set_anonymous_tier(ROOMY_ANONYMOUS_TIER)
        checks = [
            ("the page and its files carry a strict Content-Security-Policy, from nginx and from a gateway",
             check_the_page_and_its_files_carry_a_strict_policy),
            ("a message typed and sent with Enter streams its whole answer", check_a_message_streams_its_whole_answer),
            ("a conversation longer than chat.max_messages is trimmed, said so, and survives a reload",
             check_a_conversation_longer_than_the_limit_is_trimmed),
            ("the queue position shows until the answer comes", check_the_queue_position_is_shown_until_the_answer),
            ("paused intake is explained with a countdown; Retry now succeeds once resumed",
             check_maintenance_is_explained_and_retried),
            ("the gate's rate limit is explained, counted down and retried by itself",
             check_the_rate_limit_counts_down_and_retries_by_itself),
            ("Stop closes the answer and mock-llm counts a cancelled request", check_stop_cancels_the_upstream_call),
            ("<script> and <img onerror> in an answer are shown as text", check_markup_in_an_answer_is_shown_as_text),
            ("a reload mid-answer picks the answer up, whole and once", check_a_reload_mid_answer_picks_the_answer_up),
            ("a chat that no longer exists is explained, not left hanging", check_a_lost_chat_is_explained),
            ("a phone-sized window fits without sideways scrolling", check_a_phone_sized_window_fits),
            ("a gateway alone serves the page, which works against it", check_a_gateway_alone_serves_the_page),
            ("an edge (nginx) refusal is explained and retried", check_an_edge_refusal_is_explained_and_retried),
        ]
        # `check_chat_page.py stop markup` runs only the checks whose function names contain one of the words.
        wanted = sys.argv[1:]
        for name, check in checks:
            if not wanted or any(word in check.__name__ for word in wanted):
                report.check(name, lambda check=check: check(test))
    except (Exception, WebDriverError):  # noqa: BLE001 - a stack or browser that does not start fails the run
        report.failed += 1
        print(f"FAIL the stack or the browser: {traceback.format_exc()}\n{stack.output()[-3000:]}", flush=True)
    finally:
        if session is not None:
            session.close()
        if driver is not None:
            driver.stop()
        stack.emergency_stop()
    if report.failed == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        stack.output_path.unlink(missing_ok=True)
    else:
        print(f"logs kept in {run_dir / 'logs'}", flush=True)
    print(f"browser test took {time.monotonic() - started:.1f}s; screenshots in {OUTPUT_DIR}; "
          f"{report.passed} passed, {report.failed} failed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
