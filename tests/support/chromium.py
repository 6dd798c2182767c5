"""Headless Chromium driven over the DevTools protocol: open a page, record every request
it makes, read its DOM, take a screenshot, print it to PDF."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from forecasts.picklist import stop_group


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Page:
    dom: str
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    pdf: bytes = b""

    @property
    def remote(self) -> list[str]:
        """Requests to anything but the file itself, data: and about: URLs."""
        return [u for u in self.requests if not u.startswith(("file://", "data:", "about:"))]


def open_page(url: str, width: int = 1280, height: int = 2000, pdf: bool = False, settle_s: float = 1.0) -> Page:
    """Load `url` in a fresh headless Chromium; wait for the load event plus `settle_s`."""
    from websockets.sync.client import connect

    exe = chromium()
    assert exe, "chromium not installed"
    # Chromium's helper processes (zygote, renderer, crashpad) outlive the browser by a moment
    # and still write into the profile, so the whole process group is stopped before the
    # profile is removed, and a straggler's file cannot fail the test.
    with tempfile.TemporaryDirectory(prefix="cf-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(600):
                if port_file.exists() and port_file.read_text().strip():
                    break
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(ws_url, max_size=None, open_timeout=30) as ws:
                ids = iter(range(1, 10_000))
                requests: list[str] = []
                events: list[dict] = []

                def call(method: str, **params):
                    i = next(ids)
                    ws.send(json.dumps({"id": i, "method": method, "params": params}))
                    while True:
                        msg = json.loads(ws.recv(timeout=120))
                        if msg.get("id") == i:
                            assert "error" not in msg, msg
                            return msg.get("result", {})
                        events.append(msg)
                        if msg.get("method") == "Network.requestWillBeSent":
                            requests.append(msg["params"]["request"]["url"])

                call("Network.enable")
                call("Page.enable")
                call("Page.navigate", url=url)
                deadline = time.monotonic() + 120
                while not any(e.get("method") == "Page.loadEventFired" for e in events):
                    assert time.monotonic() < deadline, "page never loaded"
                    msg = json.loads(ws.recv(timeout=120))
                    events.append(msg)
                    if msg.get("method") == "Network.requestWillBeSent":
                        requests.append(msg["params"]["request"]["url"])
                end = time.monotonic() + settle_s
                while time.monotonic() < end:
                    try:
                        msg = json.loads(ws.recv(timeout=max(end - time.monotonic(), 0.01)))
                    except TimeoutError:
                        break
                    if msg.get("method") == "Network.requestWillBeSent":
                        requests.append(msg["params"]["request"]["url"])
                dom = call("Runtime.evaluate", expression="document.documentElement.outerHTML")["result"]["value"]
                shot = base64.b64decode(call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
                printed = base64.b64decode(call("Page.printToPDF", printBackground=False)["data"]) if pdf else b""
                return Page(dom=dom, requests=requests, screenshot=shot, pdf=printed)
        finally:
            stop_group(proc)
