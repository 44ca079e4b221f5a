"""Open every page of the built book in headless Chromium and check what a reader would see.

Usage (the Makefile's ``make test`` runs it after the build)::

    .venv/bin/python scripts/check_book.py [--html-dir _build/html] [--chromium /usr/bin/chromium]

The built HTML is served from 127.0.0.1 on a free port. Every page listed in _toc.yml is
loaded in a 1280 x 900 px window; a page fails when:

- it does not load (HTTP error, missing file, a local asset that 404s, a JavaScript error);
- a cell output holds a Python traceback, a myst-nb error output, or stderr that reads like
  an exception (``SomethingError: ...``);
- a chapter page has no image, or any ``<img>`` did not load (``naturalWidth == 0``);
- math is left untypeset: a ``.math`` element without MathJax output, an ``mjx-merror``, or
  raw ``$$`` / ``\\(`` / ``\\[`` / ``\\begin{`` left in the prose;
- the page asks any host other than 127.0.0.1/localhost for anything (such requests are
  aborted and counted: the book must work offline), or its HTML references a remote script,
  stylesheet, image or frame.

What a reader sees, measured in the browser (every page, the same rules):

- **Nothing cut off.** With every collapsed cell and closed solution opened, a code block or a
  cell output (any ``<pre>``) whose content is wider than its box (``scrollWidth >
  clientWidth``) fails, and the lines that do not fit are counted (their width measured in the
  block's own font); so does display math or a table wider than the text column or than the
  box that holds it.
- **No answer in sight.** With the page as loaded, an exercise's answer must not be visible:
  any non-empty cell output that follows a solution (sphinx-exercise's ``.solution``, or an
  admonition titled "Solution...") before the next exercise or heading and is not inside it,
  or any content of a solution that is visible before the reader opens it, fails.
- **Figures legible.** Proxy: the on-screen size of the figure's default text. A matplotlib
  PNG records its resolution (``dpi``) and the book draws labels at matplotlib's default
  ``font.size`` of 10 pt or larger (the check reads each page's source, the .md or .ipynb
  beside _toc.yml, and fails a page whose code sets a smaller ``fontsize``, ``labelsize`` or
  ``font.size``), so a 10-pt label is ``10 * dpi / 72`` image pixels tall and appears at
  ``10 * dpi / 72 * rendered_width / natural_width`` CSS px. An image shrunk to fit the
  column (rendered narrower than its natural width) shrinks its labels with it; below
  ``MIN_LABEL_PX`` the page fails. Images without a resolution (SVG, or a PNG without a pHYs
  chunk) count as 96 dpi, the CSS pixel.
- **Prose with code, not a test log.** The share of the page's height taken by code the reader
  sees without expanding anything (visible cell inputs and literal blocks, not outputs) is
  printed per page (``code=``), and a page above ``MAX_CODE_SHARE`` fails.
- **Every citation says which reference.** Two citations that read the same (``Apple, 2025``)
  but link to different entries of the bibliography, on any pages of the book, fail every page
  that shows one of them (the fix is in references.bib: ``year = {2025a}``, ``{2025b}``).

A full-page screenshot of each page, as loaded, is saved under ``_build/screenshots/``. One
line is printed per page, then ``check_book: N passed, M failed``; the exit code is 1 when any
page failed and 2 when the check could not run (no build, no browser).
"""

from __future__ import annotations

import argparse
import base64
import functools
import html.parser
import http.server
import io
import json
import os
import re
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml  # type: ignore[import-untyped]
from PIL import Image
from playwright.sync_api import Page, Request, Route, ViewportSize, WebSocket, sync_playwright

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
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
#: A page fails when code the reader sees without expanding anything takes more of its height.
MAX_CODE_SHARE = 0.30
#: matplotlib's default font.size; the book's figures use it or larger (small_font_sizes).
NOMINAL_LABEL_PT = 10.0
#: The smallest on-screen height, in CSS px, at which a figure's 10-pt label still counts as
#: legible (the body text is 16 px, code 13 px).
MIN_LABEL_PX = 10.0
#: The resolution assumed for an image that records none (the CSS reference pixel).
DEFAULT_DPI = 96.0

#: The line ``import coremltools`` prints per Core ML runtime class on a machine without Core ML.
#: ``ane_lib.coreml`` imports coremltools quietly, so one in a page means a chapter bypassed it.
COREML_PROXY_NOTICE = re.compile(
    r"^Failed to load _ML\w*Proxy: No module named 'coremltools\.libcoremlpython'\s*$", re.M
)


def coreml_notices(text: str) -> list[str]:
    """The coremltools runtime notices in ``text`` (other lines, similar or not, ignored)."""
    return [m.group(0).strip() for m in COREML_PROXY_NOTICE.finditer(text)]


#: A matplotlib text size set in code: ``fontsize=8``, ``labelsize="small"``,
#: ``"legend.fontsize": 7``, ``rcParams["font.size"] = 9`` and the like.
FONT_SIZE_SETTING = re.compile(
    r"""(?P<key>fontsize|labelsize|titlesize|font\.size)["']?\]?\s*[=:]\s*"""
    r"""(?P<value>\d+(?:\.\d+)?|["'][a-z-]+["'])"""
)
#: matplotlib's named sizes, as multiples of the default font.size.
NAMED_FONT_SCALE = {
    "xx-small": 0.579,
    "x-small": 0.694,
    "small": 0.833,
    "smaller": 0.833,
    "medium": 1.0,
    "large": 1.2,
    "larger": 1.2,
    "x-large": 1.44,
    "xx-large": 1.728,
}
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.M | re.S)


def page_code(source: Path) -> str:
    """The code cells of a page's source: a MyST notebook (.md) or a Jupyter notebook."""
    text = source.read_text(encoding="utf-8")
    if source.suffix == ".ipynb":
        cells = json.loads(text).get("cells", [])
        return "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c.get("cell_type") == "code"
        )
    return "\n".join(CODE_CELL.findall(text))


def small_font_sizes(code: str, minimum: float = NOMINAL_LABEL_PT) -> list[str]:
    """Font-size settings in ``code`` below ``minimum`` points (named sizes relative to 10 pt).

    The figure-legibility proxy assumes no label is smaller than matplotlib's default 10 pt;
    this finds the places where a page makes one smaller.
    """
    found = []
    for match in FONT_SIZE_SETTING.finditer(code):
        value = match.group("value").strip("'\"")
        scale = NAMED_FONT_SCALE.get(value)
        if scale is None and not value[0].isdigit():
            continue  # a name matplotlib does not have; not ours to judge
        points = NOMINAL_LABEL_PT * scale if scale is not None else float(value)
        if points < minimum - 1e-9:
            found.append(match.group(0))
    return found


def page_source(book_root: Path, rel_path: str) -> Path | None:
    """The .md or .ipynb a built page came from, if it is in the book's tree."""
    stem = book_root / rel_path.removesuffix(".html")
    for suffix in (".md", ".ipynb"):
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return None


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

# Shared by the two probes below: the article, visibility, and what counts as a solution.
_PROBE_HELPERS_JS = r"""
  const article = document.querySelector("article.bd-article") || document.querySelector("main")
    || document.body;
  const seen = (el) => el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })
    && el.getBoundingClientRect().height > 0;
  const titleOf = (el) => {
    const title = el.querySelector(":scope > .admonition-title");
    return title ? title.textContent.replace(/\s+/g, " ").trim() : "";
  };
  // sphinx-exercise's solutions, and plain admonitions titled "Solution ...".
  const isSolution = (el) => el.matches(".solution")
    || (el.matches(".admonition") && /^solution\b/i.test(titleOf(el)));
  const solutionOf = (el) => {
    for (let p = el.parentElement; p && p !== article; p = p.parentElement) {
      if (isSolution(p)) return p;
    }
    return null;
  };
  // An element's text without the copy button's label.
  const textOf = (el) => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll("button, .copybtn").forEach((b) => b.remove());
    return copy.textContent;
  };
  const snippet = (text) => text.replace(/\s+/g, " ").trim().slice(0, 60);
"""

# What a reader sees as the page loads: the share of code in sight, and answers in sight.
READER_PROBE_JS = (
    "() => {"
    + _PROBE_HELPERS_JS
    + r"""
  // Code in sight: visible cell inputs and literal blocks outside cells; outputs are results.
  const codeBlocks = Array.from(article.querySelectorAll(".cell_input, pre")).filter(
    (el) => el.matches(".cell_input") || !el.closest(".cell_input, .cell_output"));
  const codeHeight = codeBlocks.filter(seen)
    .reduce((sum, el) => sum + el.getBoundingClientRect().height, 0);
  const pageHeight = article.getBoundingClientRect().height;

  // Answers in sight: walk the page in order; after a solution and until the next exercise or
  // heading, a visible cell output is the solution's answer printed outside it.
  const answers = [];
  const openSolutions = [];
  let zone = null;
  const marks = article.querySelectorAll(
    ".exercise, .admonition, h1, h2, h3, h4, h5, h6, .cell_output");
  for (const el of marks) {
    const inside = solutionOf(el);
    if (el.matches(".cell_output")) {
      const hasContent = textOf(el).trim() !== "" || el.querySelector("img, svg, table");
      if (!hasContent || !seen(el)) continue;
      if (inside) {
        openSolutions.push(`${titleOf(inside)}: output ${snippet(textOf(el))}`);
      } else if (zone) {
        answers.push(`after '${zone}': ${snippet(textOf(el)) || "(an image)"}`);
      }
    } else if (isSolution(el) && !inside) {
      zone = titleOf(el);
      const body = Array.from(el.children).filter((c) => !c.matches(".admonition-title"));
      if (body.some(seen)) openSolutions.push(`${zone}: its text is shown on load`);
    } else if (!inside && (el.matches(".exercise") || /^H[1-6]$/.test(el.tagName))) {
      zone = null;
    }
  }
  return {
    codeShare: pageHeight > 0 ? codeHeight / pageHeight : 0,
    answers,
    openSolutions: [...new Set(openSolutions)],
  };
}
"""
)

# With everything opened (collapsed cells, closed solutions), what does not fit its box.
LAYOUT_PROBE_JS = (
    "() => {"
    + _PROBE_HELPERS_JS
    + r"""
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  document.querySelectorAll(".toggle-hidden")
    .forEach((el) => el.classList.remove("toggle-hidden"));
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft)
    - parseFloat(style.paddingRight);
  const ctx = document.createElement("canvas").getContext("2d");

  const wideCode = [];
  for (const pre of article.querySelectorAll("pre")) {
    if (pre.scrollWidth <= pre.clientWidth + 1) continue;
    const st = getComputedStyle(pre);
    ctx.font = `${st.fontStyle} ${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
    const room = pre.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
    const over = pre.textContent.split("\n")
      .filter((line) => ctx.measureText(line).width > room + 0.5);
    const kind = pre.closest(".cell_output") ? "output"
      : pre.closest(".cell_input") ? "code" : "literal block";
    wideCode.push({ kind, lines: Math.max(over.length, 1),
                    first: snippet(over[0] || pre.textContent) });
  }

  const tex = new Map();
  if (window.MathJax && MathJax.startup && MathJax.startup.document) {
    for (const item of MathJax.startup.document.math) {
      if (item.display && item.typesetRoot) tex.set(item.typesetRoot, item.math);
    }
  }
  const wideMath = [];
  for (const box of article.querySelectorAll('mjx-container[display="true"]')) {
    const math = box.querySelector("mjx-math");
    const width = Math.max(box.scrollWidth, math ? math.getBoundingClientRect().width : 0);
    const room = Math.min(column, box.clientWidth || column);
    if (width > room + 1) {
      wideMath.push({ width: Math.round(width), room: Math.round(room),
                      text: snippet(tex.get(box) || box.textContent) });
    }
  }

  const wideTables = [];
  for (const table of article.querySelectorAll("table")) {
    const width = Math.max(table.scrollWidth, table.getBoundingClientRect().width);
    const room = Math.min(column, table.parentElement.clientWidth || column);
    if (width > room + 1) {
      const head = table.querySelector("tr");
      wideTables.push({ width: Math.round(width), room: Math.round(room),
                        text: snippet(head ? head.textContent : table.textContent) });
    }
  }

  const images = Array.from(article.querySelectorAll("img"))
    .map((img) => ({ src: img.currentSrc || img.src, natural: img.naturalWidth,
                     rendered: img.getBoundingClientRect().width }));
  return { column, wideCode, wideMath, wideTables, images };
}
"""
)


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


class _CitationFinder(html.parser.HTMLParser):
    """The citations of a page as sphinxcontrib-bibtex writes them: links into the bibliography,
    each as (text a reader sees, the entry's anchor)."""

    def __init__(self) -> None:
        super().__init__()
        self.citations: list[tuple[str, str]] = []
        self._anchor: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") or "" if tag == "a" else ""
        if "bibliography.html#" in href:
            self._anchor, self._text = href.rsplit("#", 1)[1], []

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor is not None:
            self.citations.append((" ".join("".join(self._text).split()), self._anchor))
            self._anchor = None


def citations(html_file: Path) -> list[tuple[str, str]]:
    """(text, bibliography anchor) of every citation in one built HTML file."""
    finder = _CitationFinder()
    finder.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    return finder.citations


def ambiguous_citations(html_files: list[Path]) -> dict[str, set[str]]:
    """Citation texts that link to more than one bibliography entry across ``html_files``."""
    targets: dict[str, set[str]] = {}
    for html_file in html_files:
        for text, anchor in citations(html_file):
            targets.setdefault(text, set()).add(anchor)
    return {text: anchors for text, anchors in targets.items() if len(anchors) > 1}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``directory`` on 127.0.0.1 (free port) from a daemon thread; return server and URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    port = server.server_address[1]
    return server, f"http://127.0.0.1:{port}/"


def find_chromium(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_page(
    page: Page, base_url: str, rel_path: str, shot: Path, html_dir: Path | None = None
) -> PageResult:
    """Load one page, probe it, screenshot it as loaded, then open everything and measure it.

    ``html_dir`` is where the served files are, to read each image's resolution.
    """
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
    reader = page.evaluate(READER_PROBE_JS)
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    layout = page.evaluate(LAYOUT_PROBE_JS)
    small_figures = [
        f"{figure.name} (10-pt text at {figure.label_px:.1f} px)"
        for figure in measure_figures(layout["images"], base_url, html_dir)
        if figure.label_px < MIN_LABEL_PX
    ]

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

    result.problems.extend(reader_problems(reader))
    result.problems.extend(layout_problems(layout))
    if small_figures:
        result.problems.append(
            f"{len(small_figures)} figure(s) with labels below {MIN_LABEL_PX:g} px "
            f"(a {NOMINAL_LABEL_PT:g}-pt label on screen): {small_figures}"
        )

    wide_lines = sum(block["lines"] for block in layout["wideCode"])
    result.summary = (
        f"cells={facts['cells']} images={facts['images']} math={facts['math']} "
        f"stderr={facts['stderr']} remote={len(blocked)} code={reader['codeShare']:.1%} "
        f"wide_code={len(layout['wideCode'])}/{wide_lines}lines "
        f"wide_math={len(layout['wideMath'])} wide_tables={len(layout['wideTables'])} "
        f"answers={len(reader['answers']) + len(reader['openSolutions'])} "
        f"small_figures={len(small_figures)}"
    )
    return result


def reader_problems(reader: dict[str, Any]) -> list[str]:
    """Problems found in the page as loaded: code share, answers in sight."""
    problems = []
    if reader["codeShare"] > MAX_CODE_SHARE:
        problems.append(
            f"code in sight takes {reader['codeShare']:.1%} of the page's height "
            f"(at most {MAX_CODE_SHARE:.0%}): collapse checks and setup (hide-cell)"
        )
    if reader["answers"]:
        problems.append(
            f"{len(reader['answers'])} exercise answer(s) visible while the solution is "
            f"closed: {reader['answers'][:3]}"
        )
    if reader["openSolutions"]:
        problems.append(f"solution(s) open before the reader asks: {reader['openSolutions'][:3]}")
    return problems


def layout_problems(layout: dict[str, Any]) -> list[str]:
    """Problems found with everything opened: code, outputs, math, tables wider than their box."""
    problems = []
    if layout["wideCode"]:
        lines = sum(block["lines"] for block in layout["wideCode"])
        kinds = Counter(block["kind"] for block in layout["wideCode"])
        first = [f"{b['kind']}: {b['first']!r}" for b in layout["wideCode"][:3]]
        problems.append(
            f"{len(layout['wideCode'])} block(s) wider than their box ({dict(kinds)}), "
            f"{lines} line(s) cut off; first: {first}"
        )
    column = round(layout["column"])
    for key, what in (("wideMath", "display math"), ("wideTables", "table")):
        if layout[key]:
            first = [f"{m['width']} px in {m['room']} px: {m['text']!r}" for m in layout[key][:3]]
            problems.append(
                f"{len(layout[key])} {what}(s) wider than the text column ({column} px) "
                f"or their box: {first}"
            )
    return problems


@dataclass
class FigureScale:
    """How large one image's nominal text appears on the page."""

    name: str
    dpi: float
    natural: int
    rendered: float

    @property
    def label_px(self) -> float:
        """On-screen height (CSS px) of a ``NOMINAL_LABEL_PT`` label in this image."""
        return NOMINAL_LABEL_PT * self.dpi / 72.0 * self.rendered / self.natural


def image_dpi(data: bytes) -> float:
    """The resolution an image records (a PNG's pHYs chunk), else ``DEFAULT_DPI``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            dpi = image.info.get("dpi")
    except (OSError, ValueError):  # SVG, or not an image Pillow reads
        return DEFAULT_DPI
    return float(dpi[0]) if dpi and dpi[0] > 1 else DEFAULT_DPI


def _image_bytes(src: str, base_url: str, html_dir: Path | None) -> bytes | None:
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        return base64.b64decode(payload) if header.endswith(";base64") else None
    if html_dir is None or not src.startswith(base_url):
        return None
    path = html_dir / unquote(urlsplit(src).path).lstrip("/")
    return path.read_bytes() if path.is_file() else None


def measure_figures(
    images: list[dict[str, Any]], base_url: str, html_dir: Path | None
) -> list[FigureScale]:
    """The scale of every loaded, displayed image (broken ones are reported elsewhere)."""
    figures = []
    for img in images:
        if img["natural"] <= 0 or img["rendered"] <= 0:
            continue
        data = _image_bytes(img["src"], base_url, html_dir)
        dpi = image_dpi(data) if data is not None else DEFAULT_DPI
        name = img["src"] if img["src"].startswith(base_url) else img["src"][:40]
        name = name.removeprefix(base_url)
        figures.append(FigureScale(name, dpi, img["natural"], img["rendered"]))
    return figures


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

    built = [args.html_dir / p for p in pages if (args.html_dir / p).is_file()]
    alike = ambiguous_citations(built)
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
                        context = browser.new_context(viewport=VIEWPORT)
                        page = context.new_page()
                        try:
                            shot = screenshot_path(args.screenshots, rel_path)
                            result = check_page(page, base_url, rel_path, shot, args.html_dir)
                        finally:
                            context.close()
                        remote = remote_assets(html_file)
                        if remote:
                            result.problems.append(f"remote assets referenced: {remote}")
                        shown_alike = sorted({t for t, _ in citations(html_file) if t in alike})
                        if shown_alike:
                            result.problems.append(
                                "citation(s) that read alike but name different references: "
                                + ", ".join(f"'{t}' ({len(alike[t])} entries)" for t in shown_alike)
                            )
                        source = page_source(args.toc.parent, rel_path)
                        small = small_font_sizes(page_code(source)) if source else []
                        if small:
                            result.problems.append(
                                f"font size(s) below {NOMINAL_LABEL_PT:g} pt set in "
                                f"{source.name if source else ''}: {small}"
                            )
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
