"""A small client for the W3C WebDriver protocol, enough to drive Debian's Chromium through chromium-driver from the
browser test: start the driver, open a headless session, find elements, type, click, run script, take screenshots
and read the console. Standard library only; every call and every wait is bounded."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
from local_stack import stop_child  # noqa: E402 - the shared module lives beside the supervisor

# The W3C WebDriver key codes used here.
ENTER = "\ue007"
SHIFT = "\ue008"
# Releases every held modifier.
RELEASE_MODIFIERS = "\ue000"
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
COMMAND_TIMEOUT_S = 60.0


class WebDriverError(RuntimeError):
    pass


def find_chromium() -> tuple[str, str]:
    """(browser binary, driver binary), or an error naming the Debian packages to install."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise WebDriverError("chromium and chromedriver are needed: apt-get install chromium chromium-driver "
                             "(make deps does it)")
    return browser, driver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ChromeDriver:
    """One chromedriver process on a free loopback port; its log goes to `log_path`."""

    def __init__(self, log_path: Path):
        self.browser, driver = find_chromium()
        self.port = free_port()
        self.log_file = log_path.open("w")
        self.process = subprocess.Popen([driver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                                        stdout=self.log_file, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if call("GET", f"{self.url}/status", timeout_s=2)["value"].get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise WebDriverError(f"chromedriver did not become ready; see {log_path}")

    def new_session(self, width: int, height: int) -> Session:
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.browser,
                # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", f"--window-size={width},{height}"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        answer = call("POST", f"{self.url}/session", {"capabilities": {"alwaysMatch": capabilities}})
        return Session(self.url, answer["value"]["sessionId"])

    def stop(self) -> None:
        stop_child(self.process)
        self.log_file.close()


def call(method: str, url: str, body: object | None = None, timeout_s: float = COMMAND_TIMEOUT_S) -> dict:
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as failure:
        detail = failure.read().decode(errors="replace")
        try:
            value = json.loads(detail)["value"]
            detail = f"{value.get('error')}: {value.get('message', '')[:500]}"
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        raise WebDriverError(f"{method} {url}: HTTP {failure.code}: {detail}") from None


class Session:
    """One browser session: a headless window."""

    def __init__(self, driver_url: str, session_id: str):
        self.base = f"{driver_url}/session/{session_id}"

    def _call(self, method: str, path: str, body: object | None = None) -> object:
        return call(method, f"{self.base}{path}", body).get("value")

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def reload(self) -> None:
        self._call("POST", "/refresh")

    def set_window_size(self, width: int, height: int) -> None:
        self._call("POST", "/window/rect", {"width": width, "height": height})

    def find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT_KEY]

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click")

    def type(self, css: str, text: str) -> None:
        """Real key events into the element, as a user types (ENTER, SHIFT... included)."""
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def run(self, script: str, *arguments: object) -> object:
        """Runs `script` as a function body in the page and returns what it returns."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(arguments)})

    def run_async(self, script: str, *arguments: object) -> object:
        """Runs `script` with a `done` callback as its last argument."""
        return self._call("POST", "/execute/async", {"script": script, "args": list(arguments)})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def console(self) -> list[dict]:
        """The browser console's entries since the last call (chromedriver's log extension)."""
        return call("POST", f"{self.base}/se/log", {"type": "browser"}).get("value") or []

    def wait_until(self, what: str, script: str, timeout_s: float = 30.0, *arguments: object) -> object:
        """Polls `script` (a function body) until it returns something truthy, which is returned."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.run(script, *arguments)
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}; last value {last!r}")

    def close(self) -> None:
        try:
            call("DELETE", self.base, timeout_s=20)
        except (OSError, WebDriverError):
            pass
