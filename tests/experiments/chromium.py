"""Open a page in headless Chromium and report what a person would see: a minimal DevTools client.

Chromium is driven over ``--remote-debugging-pipe`` (DevTools messages as NUL-terminated JSON on
file descriptors 3 and 4), so no driver package is needed. :func:`inspect_page` loads a file,
waits for the load event and returns the console errors, uncaught exceptions, every request the
page made, the state of every image and, optionally, a PNG screenshot of the whole page.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe"]
NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    screenshot: bytes | None = None


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc = proc
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, "
             "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, "
             "src: i.src.slice(0, 30)})))")


def inspect_page(path: Path, *, screenshot: bool = False, width: int = 1280,
                 timeout: float = 60.0) -> PageReport:
    """Load ``path`` in headless Chromium; see the module docstring."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium")
    cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
    evt_r, evt_w = os.pipe()  # Chromium writes replies on fd 4
    # the child's ends above fd 9 (bash, unlike dash, redirects such fds), so that moving them
    # to 3 and 4 cannot overwrite one another
    cmd_r, evt_w = (_high_fd(fd) for fd in (cmd_r, evt_w))
    profile = tempfile.mkdtemp(prefix="simkgcl-chromium-")
    shell = f'exec "$@" 3<&{cmd_r} 4>&{evt_w}'
    proc = subprocess.Popen(["bash", "-c", shell, "bash", binary, *FLAGS,
                             f"--user-data-dir={profile}", f"--window-size={width},900",
                             "about:blank"],
                            pass_fds=(cmd_r, evt_w), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(cmd_r)
    os.close(evt_w)
    pipe = _Pipe(proc, cmd_w, evt_r)
    report = PageReport()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = pipe.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                      "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        value = pipe.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True,
                                               "awaitPromise": True}, session=session)
        report.images = json.loads(value["result"]["value"])
        report.title = pipe.send("Runtime.evaluate", {"expression": "document.title",
                                                      "returnByValue": True},
                                 session=session)["result"]["value"]
        if screenshot:
            shot = pipe.send("Page.captureScreenshot", {"format": "png",
                                                        "captureBeyondViewport": True},
                             session=session, timeout=timeout)
            report.screenshot = base64.b64decode(shot["data"])
        time.sleep(0.2)  # let late console messages arrive
        pipe.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            pipe.send("Browser.close", timeout=5)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(cmd_w)
        os.close(evt_r)
        shutil.rmtree(profile, ignore_errors=True)
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            report.console_errors.append(" ".join(str(a.get("value", a.get("description")))
                                                  for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            report.console_errors.append(params["entry"].get("text", ""))
        elif method == "Runtime.exceptionThrown":
            report.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Network.requestWillBeSent":
            report.requests.append(params["request"]["url"][:80])
        elif method == "Network.loadingFailed":
            report.failed_requests.append(params.get("errorText", ""))
    return report
