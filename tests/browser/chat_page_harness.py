"""What the browser tests share: the settings the stack runs with, the scripts that read the page, and
`ChatPageTest`, which types into the page as a user does, reads what it shows, takes screenshots, and asks the
services (mock-llm, the gateways' metrics, the dam's admin API) what happened behind it."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_stack import Stack  # noqa: E402 - beside the supervisor
from webdriver import ENTER, RELEASE_MODIFIERS, SHIFT, Session  # noqa: E402

OUTPUT_DIR = ROOT / "target" / "browser-test"
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
