"""What the browser tests share: the API served on a free loopback port in a thread, Debian's
Chromium with the flags that keep it off the network and render WebGL in software, and a
request router that lets only the test server (and data:/blob: URLs) through."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cimtwin.settings import Settings
from tests.conftest import wait_until_healthy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it when run as root)",
)
#: the viewer's query for software WebGL: half the resolution, a quarter of the pixels to shade
#: (CSS pixels, clicks and layout unchanged)
SOFTWARE_GL = "resolution=0.5"
#: headless, software WebGL (SwiftShader), and none of Chromium's own connections out
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve(settings: Settings) -> Iterator[str]:
    """The API on a free loopback port in a background thread; yields its base URL."""
    import uvicorn

    from cimtwin.api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url)
    yield url
    server.should_exit = True
    thread.join(10)


def only_this_server(
    base: str, problems: list[str] | None = None, seen: Callable[[str], None] | None = None
) -> Callable[[Any], None]:
    """A Playwright route handler: requests to ``base`` (and data:/blob:) go through, any
    other is aborted and, with ``problems``, recorded there; ``seen`` gets every URL."""

    def route(r: Any) -> None:
        url = r.request.url
        if seen is not None:
            seen(url)
        if url == base or url.startswith((base.rstrip("/") + "/", "data:", "blob:")):
            r.continue_()
        else:
            if problems is not None:
                problems.append(f"outside request {url}")
            r.abort()

    return route


def watch(page: Any, problems: list[str]) -> None:
    """Record in ``problems`` what a page must not do: console errors, uncaught exceptions,
    HTTP errors and failed requests."""
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
    )
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}: {r.failure}"))
