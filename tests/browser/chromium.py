"""Headless Chromium driven over the Chrome DevTools protocol (aiohttp's websocket client, no extra
package): the browser tests and bench/report_bench.py open the HTML report in it.

Debian's chromium (and chromium-driver) are installed by the Makefile's `browser` step. Each browser
gets a fresh profile directory, no network services, and is stopped by its own process id.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page. `async with Chromium.start() as page: await page.open(path)`."""

    def __init__(self, proc: subprocess.Popen[bytes], profile: Path) -> None:
        self._proc = proc
        self._profile = profile
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    @staticmethod
    def available() -> bool:
        return Path(CHROMIUM).is_file()

    @classmethod
    def start(cls, width: int = 1400, height: int = 1000) -> Chromium:
        profile = Path(tempfile.mkdtemp(prefix="licshift-chromium-"))
        proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(proc, profile)

    async def __aenter__(self) -> Chromium:
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrowserError(f"{CHROMIUM} did not start (exit {self._proc.returncode})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        self.stop()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive(timeout=120)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})
            if "method" in message:
                self._events.append(message)

    async def open(self, url: str, *, ready: str = "document.body && document.body.dataset.ready === '1'") -> None:
        """Load a URL (`path.as_uri()` for a file) and wait until `ready` (a JS expression) is true."""
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_for(ready)

    async def wait_for(self, expression: str, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not await self.eval(f"!!({expression})"):
            if self.errors():
                raise BrowserError(f"the page threw: {self.errors()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    def errors(self) -> list[str]:
        """Uncaught exceptions the page's scripts threw since it was opened."""
        return [
            str(e["params"]["exceptionDetails"].get("exception", {}).get("description", e["params"]))
            for e in self._events
            if e.get("method") == "Runtime.exceptionThrown"
        ]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(
                f"{expression}: {result['exceptionDetails'].get('exception', result['exceptionDetails'])}"
            )
        return result.get("result", {}).get("value")

    async def screenshot(self, width: int = 1400) -> bytes:
        """A PNG of the whole page (the viewport stretched to the document's height)."""
        height = int(await self.eval("document.documentElement.scrollHeight"))
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])
