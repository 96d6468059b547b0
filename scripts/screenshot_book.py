"""Screenshots of a built book in headless Chromium, and the pages that scroll sideways.

Builds nothing: point it at a built book (``make book`` writes ``_build/html``). It serves
that folder on 127.0.0.1, opens every page in headless Chromium at each width with every
host but 127.0.0.1 unreachable, and writes full-page screenshots, one window of ``--tile`` CSS
pixels tall after another, to ``OUT/<width>[-dark]/<page>-NN.png``. It then prints one JSON
object per page and width, and a summary: the pages whose body scrolls sideways
(``scrollWidth`` over the width), code and outputs that scroll inside themselves, equations
wider than their box, and every request for something off the machine. It exits 1 when a
page scrolls sideways or asks for anything remote.

    python scripts/screenshot_book.py _build/html shots --widths 1366 390
    python scripts/screenshot_book.py _build/html shots --widths 390 --dark \\
        --pages notebooks/07_full_model book/intro

It talks to Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``),
so it needs only the standard library and a ``chromium`` on the PATH. CI has no Chromium and
does not run it.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

# Widths at or under this are emulated as a phone (touch, mobile viewport).
PHONE_MAX_WIDTH = 600
# Hosts of requests that stay on the machine (data: and blob: addresses have none).
LOCAL = {"127.0.0.1", None}
# Seconds a page may take to load and typeset its math.
LOAD_TIMEOUT = 60

# Run as `python -c TRAMPOLINE READ WRITE CHROMIUM FLAGS...`: puts the pipe's ends on the fds
# that --remote-debugging-pipe uses, then becomes Chromium.
TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execvp(sys.argv[3], sys.argv[3:])"
)

# Runs in the page once it has loaded and MathJax has typeset: what the summary reports.
MEASURE = """((width) => {
  // On a phone, Chromium widens the layout viewport (innerWidth) to fit a page that
  // overflows, so overflow is measured against the device's width, not innerWidth.
  const scrolls = (el) => el.scrollWidth > el.clientWidth + 1;
  const where = (el) => {
    const cell = el.closest('.cell');
    const label = cell ? 'cell ' + [...document.querySelectorAll('.cell')].indexOf(cell) : '';
    const over = el.scrollWidth - el.clientWidth;
    return (label + ' +' + over + 'px ' + el.textContent.trim().slice(0, 40)).trim();
  };
  const inScroller = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  const pres = [...document.querySelectorAll('article pre')].filter(scrolls);
  // Display equations wider than their box (inline ones have no box of their own).
  const maths = [...document.querySelectorAll('mjx-container')].filter((m) =>
    (m.getAttribute('display') === 'true' && scrolls(m)) ||
    (m.getBoundingClientRect().right > width + 1 && !inScroller(m)));
  const wide = [...document.querySelectorAll('article *')].filter((el) => {
    const r = el.getBoundingClientRect();
    return r.right > width + 1 && r.width > 0 && !inScroller(el);
  });
  const tex = [];
  const walker = document.createTreeWalker(document.querySelector('article') || document.body,
    NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, script, style, mjx-container, .math')) continue;
    const m = n.textContent.match(/\\\\[A-Za-z]{2,}|\\$[^$\\s]/);
    if (m) tex.push(n.textContent.trim().slice(0, 60));
  }
  const images = [...document.querySelectorAll('article img')].filter((i) => i.width > 0).map(
    (i) => ({src: i.getAttribute('src').split('/').pop().slice(0, 24),
             dpi: Math.round(i.naturalWidth / i.width * 96)}));
  return {
    scroll_width: document.documentElement.scrollWidth,
    inner_width: window.innerWidth,
    height: document.documentElement.scrollHeight,
    scrolling_code: pres.filter((p) => !p.closest('.cell_output')).map(where),
    scrolling_output: pres.filter((p) => p.closest('.cell_output')).map(where),
    wide_math: maths.map((m) => getComputedStyle(m).overflowX + ' ' + m.textContent.slice(0, 50)),
    wide_elements: wide.slice(0, 10).map((el) => el.tagName.toLowerCase() + '.' +
      [...el.classList].join('.') + ' ' + Math.round(el.getBoundingClientRect().right) + 'px'),
    raw_tex: tex,
    images: images,
    title: document.title,
  };
})"""

# Resolves once MathJax has typeset the page (at once where the page has no MathJax).
MATH_READY = (
    "new Promise((done) => { const m = window.MathJax;"
    " if (m && m.startup && m.startup.promise) m.startup.promise.then(() => done(true));"
    " else done(false); })"
)


def _above_four(fd: int) -> int:
    """A copy of ``fd`` numbered 5 or more; ``fd`` itself is closed."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return copy


class Chromium:
    """A headless Chromium driven through the DevTools protocol over its debugging pipe."""

    def __init__(self, binary: str) -> None:
        read_from_us, write_to_chromium = os.pipe()
        read_from_chromium, write_to_us = os.pipe()
        # The child's ends move above 4 first: one of them may be fd 3 or 4 itself, which
        # TRAMPOLINE would overwrite before using it.
        read_from_us, write_to_us = (_above_four(fd) for fd in (read_from_us, write_to_us))
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            # Nothing but this machine resolves: a page that asks for a remote file shows it
            # by a failed request (reported), never by fetching it.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "about:blank",
        ]
        # Chromium reads commands from fd 3 and writes replies to fd 4: a small Python
        # trampoline puts the pipe's ends there and becomes Chromium (no preexec_fn, which
        # is unsafe once the server's thread runs; no sh, which takes one-digit fds only).
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(read_from_us), str(write_to_us), binary, *flags],
            pass_fds=(read_from_us, write_to_us),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(read_from_us)
        os.close(write_to_us)
        self.writer = os.fdopen(write_to_chromium, "wb")
        self.reader = os.fdopen(read_from_chromium, "rb")
        self.pending = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self) -> dict:
        """The next message: Chromium ends each with a NUL byte."""
        while b"\0" not in self.pending:
            chunk = os.read(self.reader.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its debugging pipe")
            self.pending += chunk
        message, _, self.pending = self.pending.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Sends one command and returns its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.writer.write(json.dumps(message).encode() + b"\0")
        self.writer.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> None:
        """Waits for an event; the caller clears ``events`` first so that an old one does not count."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(self._read())

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        self.process.wait(timeout=30)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serves ``root`` on 127.0.0.1 at a free port, quietly, from a background thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def shoot(browser: Chromium, url: str, width: int, dark: bool, tile: int, stem: Path) -> dict:
    """Opens ``url`` at ``width`` CSS pixels, writes its tiles as ``stem-NN.png`` and returns
    the page's measurements (MEASURE) and the remote requests it made."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        phone = width <= PHONE_MAX_WIDTH
        browser.send("Page.enable", session)
        browser.send("Network.enable", session)
        browser.send(
            "Emulation.setDeviceMetricsOverride", session,
            width=width, height=tile, deviceScaleFactor=2 if phone else 1,
            mobile=phone,
        )  # fmt: skip
        scheme = "dark" if dark else "light"
        browser.send(
            "Emulation.setEmulatedMedia", session,
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )  # fmt: skip
        # The theme keeps the reader's choice in localStorage; "auto" follows the media query.
        browser.send(
            "Page.addScriptToEvaluateOnNewDocument", session,
            source=f"localStorage.setItem('mode', '{scheme}'); localStorage.setItem('theme', '{scheme}');",
        )  # fmt: skip
        browser.events.clear()
        browser.send("Page.navigate", session, url=url)
        browser.wait_for("Page.loadEventFired", LOAD_TIMEOUT)
        browser.send("Runtime.evaluate", session, expression=MATH_READY, awaitPromise=True)
        time.sleep(0.5)  # fonts and the theme's late layout
        measured = browser.send(
            "Runtime.evaluate", session, expression=f"{MEASURE}({width})", returnByValue=True
        )
        result = measured["result"]["value"]
        remote = sorted(
            {
                e["params"]["request"]["url"]
                for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"
                and urllib.parse.urlsplit(e["params"]["request"]["url"]).hostname not in LOCAL
            }
        )  # fmt: skip
        result["remote_requests"] = remote
        # The window is one tile tall and scrolls from tile to tile, so each file shows what a
        # reader sees there (the sticky header included; the last tile overlaps the one before).
        stem.parent.mkdir(parents=True, exist_ok=True)
        for number, top in enumerate(range(0, result["height"], tile)):
            browser.send("Runtime.evaluate", session, expression=f"window.scrollTo(0, {top})")
            time.sleep(0.2)
            shot = browser.send("Page.captureScreenshot", session, format="png")
            stem.with_name(f"{stem.name}-{number:02d}.png").write_bytes(base64.b64decode(shot["data"]))
        return result
    finally:
        browser.send("Target.closeTarget", targetId=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("out", type=Path, help="folder for the screenshots (created)")
    parser.add_argument("--widths", type=int, nargs="+", default=[1366, 390], help="CSS pixels")
    parser.add_argument("--dark", action="store_true", help="dark mode instead of light")
    parser.add_argument("--tile", type=int, default=1600, help="window height: CSS pixels per file")
    parser.add_argument("--pages", nargs="+", help="pages without .html (default: all but the index)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        parser.error(f"{args.html} has no index.html: build the book first (make book)")
    pages = args.pages or sorted(
        str(p.relative_to(args.html).with_suffix(""))
        for folder in ("book", "notebooks")
        for p in (args.html / folder).glob("*.html")
    )
    server, base = serve(args.html)
    browser = Chromium(args.chromium)
    sideways, remote = [], []
    try:
        for width in args.widths:
            folder = args.out / (f"{width}-dark" if args.dark else str(width))
            for page in pages:
                found = shoot(browser, f"{base}{page}.html", width, args.dark, args.tile,
                              folder / page.replace("/", "__"))  # fmt: skip
                print(json.dumps({"page": page, "width": width, **found}), flush=True)
                if max(found["scroll_width"], found["inner_width"]) > width:
                    sideways.append(f"{page} at {width} px ({found['scroll_width']} px wide)")
                remote += found["remote_requests"]
    finally:
        browser.close()
        server.shutdown()
    print(json.dumps({"scrolls_sideways": sideways, "remote_requests": sorted(set(remote))}))
    return 1 if sideways or remote else 0


if __name__ == "__main__":
    sys.exit(main())
