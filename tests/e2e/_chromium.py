"""Drive headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe): no websocket
library, no port. Used by the report's browser test to load a page, collect console errors, failed
loads and network requests, run a script in the page and take full-page screenshots.

    with Browser.start() as browser:
        page = browser.open(Path("report.html").resolve().as_uri())
        page.evaluate("document.title"); page.screenshot(Path("shot.png")); page.problems()

The protocol: JSON messages terminated by a NUL byte; Chromium reads commands on fd 3, writes on fd 4.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome")
REAL_BINARIES = ("/usr/lib/chromium/chromium",)  # Debian's /usr/bin/chromium is a shell wrapper


def find_chromium() -> str | None:
    """The chromium executable on this machine, or None."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in REAL_BINARIES if os.access(path, os.X_OK)), None)


class DevToolsError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int, profile: str) -> None:
        self.process, self.to_browser, self.from_browser, self.profile = process, to_browser, from_browser, profile
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    def start(cls, executable: str | None = None, *, log: Path | None = None) -> Browser:
        executable = executable or find_chromium()
        if executable is None:
            raise DevToolsError("no chromium found")
        commands_read, commands_write = os.pipe()
        replies_read, replies_write = os.pipe()
        profile = tempfile.mkdtemp(prefix="honed-chromium-")

        def child_fds() -> None:  # Chromium expects its pipe ends on fds 3 (in) and 4 (out)
            high_in, high_out = os.dup(commands_read), os.dup(replies_write)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                "--disable-background-networking", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "about:blank"]
        stderr = open(log, "wb") if log else subprocess.DEVNULL
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                   preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(commands_read)
        os.close(replies_write)
        return cls(process, commands_write, replies_read, profile)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (DevToolsError, OSError):
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevToolsError("timed out waiting for chromium")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise DevToolsError(f"chromium closed the pipe (exit status {self.process.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept in `events`."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, *, session: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def open(self, url: str, *, width: int = 1280, height: int = 900, mobile: bool = False) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        page.viewport(width, height, mobile=mobile)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session=session)
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.browser.send("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
                          session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; an exception in it is a DevToolsError."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, *, width: int = 1280) -> None:
        """The whole page (not just the viewport) as a PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        shot = self.browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1},
        }, session=self.session)
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and any request that is not file: or data:."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')} {params['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log error: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
            elif method == "Network.loadingFailed":
                found.append(f"failed load: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("file:", "data:", "about:")):
                    found.append(f"network request: {url}")
        return found
