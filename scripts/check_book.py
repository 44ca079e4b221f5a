"""Open every page of the built book in headless Chromium and check what a reader would see.

Usage (the Makefile's ``make test`` runs it after the build)::

    .venv/bin/python scripts/check_book.py [--html-dir _build/html] [--chromium /usr/bin/chromium]

The built HTML is served from 127.0.0.1 on a free port. Every page listed in _toc.yml is
loaded; a page fails when:

- it does not load (HTTP error, missing file, a local asset that 404s, a JavaScript error);
- a cell output holds a Python traceback, a myst-nb error output, or stderr that reads like
  an exception (``SomethingError: ...``);
- a chapter page has no image, or any ``<img>`` did not load (``naturalWidth == 0``);
- math is left untypeset: a ``.math`` element without MathJax output, an ``mjx-merror``, or
  raw ``$$`` / ``\\(`` / ``\\[`` / ``\\begin{`` left in the prose;
- the page asks any host other than 127.0.0.1/localhost for anything (such requests are
  aborted and counted: the book must work offline), or its HTML references a remote script,
  stylesheet, image or frame.

A full-page screenshot of each page is saved under ``_build/screenshots/``. One line is printed
per page, then ``check_book: N passed, M failed``; the exit code is 1 when any page failed and
2 when the check could not run (no build, no browser).
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from playwright.sync_api import Page, Request, Route, WebSocket, sync_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Flags that keep Debian's Chromium from reaching out (updates, sync, QUIC probes) and
#: make it run as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Chapters must carry at least one figure; other pages (intro, bibliography) need not.
FIGURE_REQUIRED_PREFIX = "chapters/"
PAGE_TIMEOUT_MS = 60_000
MATHJAX_TIMEOUT_MS = 30_000

#: The line ``import coremltools`` prints per Core ML runtime class on a machine without Core ML.
#: ``ane_lib.coreml`` imports coremltools quietly, so one in a page means a chapter bypassed it.
COREML_PROXY_NOTICE = re.compile(
    r"^Failed to load _ML\w*Proxy: No module named 'coremltools\.libcoremlpython'\s*$", re.M
)


def coreml_notices(text: str) -> list[str]:
    """The coremltools runtime notices in ``text`` (other lines, similar or not, ignored)."""
    return [m.group(0).strip() for m in COREML_PROXY_NOTICE.finditer(text)]


# Collects the facts about one loaded page in a single round trip to the browser.
PAGE_PROBE_JS = r"""
async () => {
  // Give every image the chance to finish (lazy or slow ones included).
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = "eager"; }
  await Promise.all(imgs.map((img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", resolve, { once: true });
    setTimeout(resolve, 10000);
  })));
  const article = document.querySelector("article.bd-article") || document.querySelector("main")
    || document.body;
  const brokenImages = imgs.filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.getAttribute("src"));
  const mathEls = Array.from(document.querySelectorAll(".math"));
  const untypeset = mathEls.filter((el) => !el.querySelector("mjx-container"))
    .map((el) => el.textContent.trim().slice(0, 80));
  const mathErrors = Array.from(document.querySelectorAll("mjx-merror"))
    .map((el) => (el.getAttribute("data-mjx-error") || el.textContent).slice(0, 80));
  // MathJax's noundefined package renders an unknown macro as red text, not as an error;
  // the assistive MathML copy shows it as <mtext mathcolor="red">\name</mtext>.
  Array.from(document.querySelectorAll("mjx-assistive-mml mtext[mathcolor='red']"))
    .filter((el) => el.textContent.startsWith("\\"))
    .forEach((el) => mathErrors.push(`undefined macro ${el.textContent}`));
  // Prose only: code, outputs and typeset math legitimately contain backslashes and dollars.
  const prose = article.cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight")
    .forEach((el) => el.remove());
  const proseText = prose.textContent;
  const rawDelimiters = ["$$", "\\(", "\\)", "\\[", "\\]", "\\begin{"]
    .filter((d) => proseText.includes(d));
  // A Markdown table that was not rendered leaves its "|---|" separator row in the text.
  const rawTables = (proseText.match(/\|\s*:?-{3,}:?\s*\|/g) || []).length;
  const outputs = Array.from(article.querySelectorAll(".cell_output"));
  const errorOutputs = Array.from(
    article.querySelectorAll(".output.traceback, .output.error")).length;
  const tracebacks = outputs.filter(
    (el) => el.textContent.includes("Traceback (most recent call last)")).length;
  const exceptionRe = /^\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception)\s*:[^\n]*/m;
  const stderrBlocks = Array.from(article.querySelectorAll(".output.stderr"));
  const stderrExceptions = stderrBlocks.map((el) => el.textContent.match(exceptionRe))
    .filter((m) => m !== null).map((m) => m[0].trim().slice(0, 120));
  return {
    title: document.title,
    images: imgs.length,
    articleImages: article.querySelectorAll("img").length,
    brokenImages,
    math: mathEls.length,
    untypeset,
    mathErrors,
    rawDelimiters,
    rawTables,
    cells: article.querySelectorAll(".cell").length,
    errorOutputs,
    tracebacks,
    stderr: stderrBlocks.length,
    stderrExceptions,
    stderrTexts: stderrBlocks.map((el) => el.textContent),
  };
}
"""


@dataclass
class PageResult:
    """What was found on one page; ``problems`` empty means it passed."""

    path: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def toc_pages(toc_file: Path) -> list[str]:
    """HTML paths (relative to the build dir) of every document listed in a jb-book _toc.yml."""
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"toc_file={str(toc_file)!r} has no 'root' entry; expected a jb-book toc")

    def files(entries: Any) -> Iterator[str]:
        for entry in entries or []:
            if "glob" in entry:
                raise ValueError(f"glob entries are not supported by the check: {entry!r}")
            if "file" in entry:
                yield entry["file"]
            for key in ("chapters", "sections"):
                yield from files(entry.get(key))

    docs = [toc["root"], *files(toc.get("parts")), *files(toc.get("chapters"))]
    # A toc entry may carry its extension; the built page never does.
    return [str(Path(doc).with_suffix("")) + ".html" for doc in docs]


class _RemoteAssetFinder(html.parser.HTMLParser):
    """Collects resources (not links) that a page would fetch from another host."""

    RESOURCE_ATTRS = {
        "script": "src",
        "img": "src",
        "iframe": "src",
        "source": "src",
        "audio": "src",
        "video": "src",
        "embed": "src",
    }

    def __init__(self) -> None:
        super().__init__()
        self.remote: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link":
            rel = (values.get("rel") or "").lower()
            if not any(r in rel for r in ("stylesheet", "preload", "icon", "modulepreload")):
                return
            url = values.get("href")
        elif tag in self.RESOURCE_ATTRS:
            url = values.get(self.RESOURCE_ATTRS[tag])
        else:
            return
        if url and _is_remote(url):
            self.remote.append(f"<{tag}> {url}")


def _is_remote(url: str) -> bool:
    parts = urlsplit(url)
    if url.startswith("//"):
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in LOCAL_HOSTS


def remote_assets(html_file: Path) -> list[str]:
    """Remote scripts, stylesheets, images and frames referenced by one built HTML file."""
    finder = _RemoteAssetFinder()
    finder.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    return finder.remote


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``directory`` on 127.0.0.1 (free port) from a daemon thread; return server and URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


def find_chromium(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_page(page: Page, base_url: str, rel_path: str, shot: Path) -> PageResult:
    """Load one page, probe it, screenshot it."""
    result = PageResult(rel_path)
    blocked: list[str] = []
    local_failures: list[str] = []
    js_errors: list[str] = []

    def on_request_failed(request: Request) -> None:
        if not _is_remote(request.url):
            local_failures.append(f"{request.url} ({request.failure})")

    def on_response(response: Any) -> None:
        if response.status >= 400 and not _is_remote(response.url):
            local_failures.append(f"{response.url} (HTTP {response.status})")

    def on_websocket(ws: WebSocket) -> None:
        if _is_remote(ws.url):
            blocked.append(ws.url)

    def on_route(route: Route) -> None:
        url = route.request.url
        if _is_remote(url):
            blocked.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    page.route("**/*", on_route)
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    page.on("websocket", on_websocket)
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    # Failed loads are reported with their address by the handlers above.
    page.on(
        "console",
        lambda msg: (
            js_errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )

    try:
        response = page.goto(base_url + rel_path, wait_until="load", timeout=PAGE_TIMEOUT_MS)
    except Exception as exc:  # playwright raises its own Error subclasses; report any
        result.problems.append(f"did not load: {exc}")
        return result
    if response is None or not response.ok:
        status = "no response" if response is None else f"HTTP {response.status}"
        result.problems.append(f"did not load: {status}")
        return result

    has_math = page.evaluate("() => document.querySelectorAll('.math').length") > 0
    if has_math:
        try:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                timeout=MATHJAX_TIMEOUT_MS,
            )
            page.evaluate("() => MathJax.startup.promise")
        except Exception as exc:
            result.problems.append(f"MathJax did not start: {exc}")

    facts = page.evaluate(PAGE_PROBE_JS)
    page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)

    if facts["brokenImages"]:
        result.problems.append(f"images not loaded: {facts['brokenImages']}")
    if rel_path.startswith(FIGURE_REQUIRED_PREFIX) and facts["articleImages"] == 0:
        result.problems.append("chapter page has no figure (no <img> in the article)")
    if facts["untypeset"]:
        result.problems.append(
            f"{len(facts['untypeset'])} math element(s) not typeset, first: "
            f"{facts['untypeset'][0]!r}"
        )
    if facts["mathErrors"]:
        result.problems.append(f"MathJax errors: {facts['mathErrors']}")
    if facts["rawDelimiters"]:
        result.problems.append(f"raw TeX delimiters left in the text: {facts['rawDelimiters']}")
    if facts["rawTables"]:
        result.problems.append(f"{facts['rawTables']} Markdown table(s) left unrendered")
    if facts["errorOutputs"] or facts["tracebacks"]:
        result.problems.append(
            f"error outputs: {facts['errorOutputs']}, tracebacks: {facts['tracebacks']}"
        )
    notices = [n for text in facts["stderrTexts"] for n in coreml_notices(text)]
    if notices:
        result.problems.append(f"coremltools runtime notices in stderr: {notices[:1]}")
    if facts["stderrExceptions"]:
        result.problems.append(f"stderr reads like an exception: {facts['stderrExceptions']}")
    if blocked:
        result.problems.append(f"{len(blocked)} request(s) to other hosts: {sorted(set(blocked))}")
    if local_failures:
        result.problems.append(f"local requests failed: {sorted(set(local_failures))}")
    if js_errors:
        result.problems.append(f"JavaScript errors: {js_errors}")

    result.summary = (
        f"cells={facts['cells']} images={facts['images']} math={facts['math']} "
        f"stderr={facts['stderr']} remote={len(blocked)}"
    )
    return result


def screenshot_path(shots_dir: Path, rel_path: str) -> Path:
    return shots_dir / (rel_path.removesuffix(".html").replace("/", "__") + ".png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html-dir", type=Path, default=REPO_ROOT / "_build" / "html")
    parser.add_argument("--toc", type=Path, default=REPO_ROOT / "_toc.yml")
    parser.add_argument("--screenshots", type=Path, default=REPO_ROOT / "_build" / "screenshots")
    parser.add_argument("--chromium", default=None, help="path to the Chromium binary")
    args = parser.parse_args(argv)

    if not (args.html_dir / "index.html").is_file():
        print(f"check_book: no built book at {args.html_dir} (run `make book`)", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(
            "check_book: Chromium not found. Install Debian's chromium "
            "(apt-get install chromium) or pass --chromium /path/to/chromium.",
            file=sys.stderr,
        )
        return 2
    pages = toc_pages(args.toc)
    if not pages:
        print("check_book: the toc lists no pages", file=sys.stderr)
        return 2
    if args.screenshots.exists():
        shutil.rmtree(args.screenshots)

    results: list[PageResult] = []
    server, base_url = serve(args.html_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                for rel_path in pages:
                    html_file = args.html_dir / rel_path
                    if not html_file.is_file():
                        results.append(PageResult(rel_path, [f"not built: {html_file}"]))
                    else:
                        context = browser.new_context(viewport={"width": 1280, "height": 900})
                        page = context.new_page()
                        try:
                            shot = screenshot_path(args.screenshots, rel_path)
                            result = check_page(page, base_url, rel_path, shot)
                        finally:
                            context.close()
                        remote = remote_assets(html_file)
                        if remote:
                            result.problems.append(f"remote assets referenced: {remote}")
                        results.append(result)
                    last = results[-1]
                    print(f"{'PASS' if last.ok else 'FAIL'}  {rel_path}  {last.summary}".rstrip())
                    for problem in last.problems:
                        print(f"      - {problem}")
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()

    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    print(f"screenshots: {args.screenshots}")
    print(f"check_book: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
