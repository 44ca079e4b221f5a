"""Tests for the book's configuration and its build scripts (scripts/*.py).

The page checker is tested end to end on a small synthetic site in the real headless Chromium
(skipped only where no Chromium is installed; `make test` installs it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from PIL import Image
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parent.parent


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


check_book = _load_script("check_book")
install_torch = _load_script("install_torch")

CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
REQUIRED_KEYS = {
    "apple2022ane", "apple2024vit", "yang2022moat", "liu2021swin", "touvron2021deit",
    "dong2022cswin", "dosovitskiy2021vit", "howard2017mobilenets", "sandler2018mobilenetv2",
    "zhang2018shufflenet", "chollet2017xception", "jin2015flattened", "krizhevsky2012alexnet",
    "lin2014nin", "szegedy2016rethinking", "dumoulin2016guide", "rogozhnikov2022einops",
    "ding2021repvgg", "ioffe2015batchnorm", "ba2016layernorm", "hu2018senet",
    "tan2019efficientnet", "hendrycks2016gelu", "paszke2019pytorch", "zhang2023d2l",
    "weber2021deeplab2", "apple_ml_ane_transformers", "apple_ml_vision_transformers_ane",
    "hollance_neural_engine", "coremltools", "note_conv2d_linear", "note_einsum_conv",
    "so_merge_conv",
}  # fmt: skip


# --- configuration -------------------------------------------------------------------------


def test_config_executes_with_cache_and_fails_on_errors() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["title"] == "From Einsum to the Neural Engine"
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert config["only_build_toc_files"] is True
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["html"]["use_repository_button"] is False
    assert config["launch_buttons"]["thebe"] is False


def test_offline_mathjax_is_shipped() -> None:
    dist = metadata.distribution("sphinx-mathjax-offline")
    files = {str(f) for f in dist.files or []}
    assert "sphinx-mathjax-offline/static/mathjax/tex-chtml.js" in files


def test_every_toc_entry_exists() -> None:
    pages = check_book.toc_pages(ROOT / "_toc.yml")
    assert pages[0] == "intro.html" and "bibliography.html" in pages
    for page in pages:
        stem = ROOT / page.removesuffix(".html")
        assert any(stem.with_suffix(ext).is_file() for ext in (".md", ".ipynb")), page


def test_toc_pages_walks_parts_chapters_and_sections(tmp_path: Path) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: chapters/a.md\n"
        "        sections:\n          - file: chapters/a1\n"
        "  - caption: B\n    chapters:\n      - file: references\n"
    )
    assert check_book.toc_pages(toc) == [
        "intro.html",
        "chapters/a.html",
        "chapters/a1.html",
        "references.html",
    ]
    toc.write_text("format: jb-book\nchapters: []\n")
    with pytest.raises(ValueError, match="no 'root'"):
        check_book.toc_pages(toc)


# --- bibliography --------------------------------------------------------------------------


def test_bibliography_parses_with_required_keys() -> None:
    keys = set(parse_file(str(ROOT / "references.bib")).entries.keys())
    assert keys >= REQUIRED_KEYS, sorted(REQUIRED_KEYS - keys)


def test_every_citation_has_an_entry() -> None:
    keys = set(parse_file(str(ROOT / "references.bib")).entries.keys())
    sources = [ROOT / "intro.md", *sorted((ROOT / "chapters").glob("*.md"))]
    cited = {
        (src.name, key.strip())
        for src in sources
        for group in CITE_ROLE.findall(src.read_text(encoding="utf-8"))
        for key in group.split(",")
    }
    missing = sorted((name, key) for name, key in cited if key not in keys)
    assert not missing, f"cited but not in references.bib: {missing}"


# --- coremltools' runtime notices (scripts/check_book.py) ------------------------------------


def test_coreml_notices_are_recognised_and_nothing_else() -> None:
    notice = "Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'\n"
    other = "Failed to load _MLComputePlanProxy: No module named 'coremltools.libcoremlpython'\n"
    kept = "UserWarning: something real\n"
    assert check_book.coreml_notices(notice + kept + other) == [notice.strip(), other.strip()]
    assert check_book.coreml_notices(kept) == []
    # A different failure with a similar shape is not one of them.
    real = "Failed to load _MLModelProxy: No module named 'numpy'\n"
    assert check_book.coreml_notices(real) == []


def test_ane_lib_imports_coremltools_without_notices() -> None:
    """The library, not the book build, keeps the notices out of every page."""
    code = "import ane_lib.coreml, ane_lib.coreml.program as p; p.import_coremltools()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert check_book.coreml_notices(done.stdout + done.stderr) == []


# --- torch pin (scripts/install_torch.py) ---------------------------------------------------


def test_pinned_torch_reads_constraints(tmp_path: Path) -> None:
    assert install_torch.pinned_torch(ROOT / "constraints.txt") == "2.13.0"
    bad = tmp_path / "c.txt"
    bad.write_text("numpy==2.0\n")
    with pytest.raises(ValueError, match="no 'torch==<version>'"):
        install_torch.pinned_torch(bad)


@pytest.mark.parametrize(
    ("version", "platform", "ok"),
    [
        ("2.13.0+cpu", "linux", True),
        ("2.13.0", "linux", False),  # PyPI's Linux wheel: the CUDA build
        ("2.13.0+cu126", "linux", False),
        ("2.13.0", "darwin", True),
        ("2.12.0+cpu", "linux", False),
    ],
)
def test_only_the_cpu_build_is_accepted_on_linux(version: str, platform: str, ok: bool) -> None:
    assert install_torch.is_acceptable(version, "2.13.0", platform) is ok


def test_constraints_pin_the_whole_environment() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    installed = {
        d.metadata["Name"].lower().replace("_", "-"): d.version for d in metadata.distributions()
    }
    # pip freeze leaves out the project itself and the packaging tools.
    skip = {"ane-lib", "pip", "setuptools", "wheel"}
    installed = {k: v.split("+")[0] for k, v in installed.items() if k not in skip}
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"not in constraints.txt (run `make constraints`): {unpinned}"
    mismatched = {k: (installed[k], pins[k]) for k in installed if installed[k] != pins[k]}
    assert not mismatched, f"installed vs pinned: {mismatched}"


# --- the page checker, end to end ----------------------------------------------------------
#
# A small synthetic site, served and checked in the real headless Chromium: the good pages must
# pass, and each fixture page below is built to break exactly one of the reader's rules (nothing
# cut off, no answer in sight, legible figures, code share), which the check must name.

#: The width of the book's text column at 1280 px (sphinx-book-theme), so that the fixtures fit or
#: overflow the way a real page would.
COLUMN_CSS = (
    "<style>body{margin:0} article.bd-article{width:688px;padding:0 32px}"
    " img{max-width:100%} pre{font:13px monospace;padding:16px;overflow:auto}"
    " mjx-container[display='true']{overflow-x:auto}</style>"
)
#: sphinx-togglebutton's own assets and settings, as a built page loads them: a `.dropdown`
#: admonition starts closed.
TOGGLE_HEAD = (
    "<link rel='stylesheet' href='{up}togglebutton.css'>"
    "<script>let toggleHintShow = 'Click to show'; let toggleHintHide = 'Click to hide';"
    " let toggleOpenOnPrint = 'true';</script>"
    "<script src='{up}togglebutton.js'></script>"
    "<script>var togglebuttonSelector = '.toggle, .admonition.dropdown';</script>"
)
NEW_RULES = {
    "wide_code": "wider than their box",
    "wide_math": "display math(s) wider than the text column",
    "wide_table": "table(s) wider than the text column",
    "answer_shown": "exercise answer(s) visible while the solution is closed",
    "solution_open": "solution(s) open before the reader asks",
    "code_heavy": "code in sight takes",
    "small_figure": "figure(s) with labels below",
    "small_font": "font size(s) below 10 pt",
    "ambiguous_cite": "citation(s) that read alike",
}


def _page(body: str, *, head: str = "", up: str = "../") -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><script>window.MathJax ="
        " {options: {processHtmlClass: 'tex2jax_process|mathjax_process|math|output_area'}}"
        "</script>"
        f"<script defer src='{up}mathjax/tex-chtml.js'></script>"
        + COLUMN_CSS
        + TOGGLE_HEAD.format(up=up)
        + f"{head}</head><body><main><article class='bd-article'>{body}</article></main>"
        "</body></html>"
    )


def _mathjax_source() -> Path:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "static" / "mathjax"


def _togglebutton_source() -> Path:
    spec = importlib.util.find_spec("sphinx_togglebutton")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "_static"


def _png(width: int, height: int, dpi: float) -> bytes:
    """A PNG of the given size that records ``dpi`` (as matplotlib's PNGs do)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue()


def _cell(code: str, output: str = "", *, hidden: str = "") -> str:
    """A myst-nb cell; ``hidden='input'`` or ``'cell'`` folds it as hide-input / hide-cell do."""
    cell_input = f"<div class='cell_input'><div class='highlight'><pre>{code}</pre></div></div>"
    cell_output = (
        f"<div class='cell_output'><div class='output stream'><pre>{output}</pre></div></div>"
        if output
        else ""
    )
    fold = "<details class='hide above-input'><summary>Show code cell</summary>{}</details>"
    if hidden == "input":
        body = fold.format(cell_input) + cell_output
    elif hidden == "cell":
        body = fold.format(cell_input + cell_output)
    else:
        body = cell_input + cell_output
    return f"<div class='cell'>{body}</div>"


def _exercise(label: str, solution_body: str, *, dropdown: bool = True) -> str:
    """sphinx-exercise's markup: an exercise, then its solution (closed when a dropdown)."""
    classes = "solution dropdown admonition" if dropdown else "solution admonition"
    return (
        f"<div class='exercise admonition' id='{label}'><p class='admonition-title'>"
        f"Exercise ({label})</p><section><p>The question.</p></section></div>"
        f"<div class='{classes}'><p class='admonition-title'>Solution to Exercise ({label})</p>"
        f"<section><p>The reasoning.</p>{solution_body}</section></div>"
    )


PROSE = "<p>" + "Prose that explains the idea at some length. " * 40 + "</p>"
FIGURE = "<img src='fig.png'>"


@pytest.fixture(scope="module")
def book_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if check_book.find_chromium(None) is None:
        pytest.skip("no Chromium installed (make test installs Debian's chromium)")
    root = tmp_path_factory.mktemp("site")
    html = root / "html"
    chapters = html / "chapters"
    chapters.mkdir(parents=True)
    shutil.copytree(_mathjax_source(), html / "mathjax")
    for asset in ("togglebutton.css", "togglebutton.js"):
        shutil.copy(_togglebutton_source() / asset, html / asset)
    # 1x1 PNG without a recorded resolution (counts as 96 dpi: its 10-pt text is 13.3 px)
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a55fbb"
        "5e0000000049454e44ae426082"
    )
    (chapters / "fig.png").write_bytes(png)
    # 6 in at 100 dpi, shown at its natural 600 px: 10-pt text at 13.9 px
    (chapters / "legible.png").write_bytes(_png(600, 300, 100))
    # 15 in at 100 dpi, shrunk into the 688-px column: 10-pt text at 6.4 px
    (chapters / "shrunk.png").write_bytes(_png(1500, 300, 100))
    (html / "index.html").write_text(_page("<p>index</p>", up=""))
    (html / "intro.html").write_text(_page("<p>No math, no figure: fine for the intro.</p>", up=""))
    long_line = "x = " + " + ".join(f"value_{i}" for i in range(30))
    pages = {
        "good": (
            "<p>Inline <span class='math notranslate nohighlight'>\\(y = Wx\\)</span></p>"
            "<div class='math notranslate nohighlight'>\\[a^2 + b^2 = c^2\\]</div>"
            "<table><tr><th>a</th></tr><tr><td>1</td></tr></table>"
            "<pre>| code | may |\n|---|---|</pre>"
            "<img src='fig.png'><img src='legible.png'>"
            "<div class='cell'><div class='cell_output'>"
            "<div class='output stderr'><pre>UserWarning: fine</pre></div></div></div>"
            + PROSE
            + _cell("import torch  # setup, folded\n" * 40, "setup done", hidden="cell")
            + _cell("check()  # a check, folded", hidden="input")
            # a gated solution: code and output inside the closed dropdown
            + _exercise("good", _cell("print(42)", "the answer is 42"))
            + "<p>As shown <a class='reference internal' href='../bibliography.html#id3'>"
            "Apple, 2025c</a>.</p>"
            + "<h2>Summary</h2><div class='cell'><div class='cell_output'><pre>after a heading"
            "</pre></div></div>"
        ),
        # the code of a folded cell is measured opened: one line does not fit
        "wide_code": FIGURE + PROSE + _cell(long_line, hidden="input"),
        "wide_math": FIGURE
        + PROSE
        + "<div class='math notranslate nohighlight'>\\["
        + " + ".join(f"a_{{{i}}} b_{{{i}}}" for i in range(40))
        + "\\]</div>",
        "wide_table": FIGURE
        + PROSE
        + "<table><tr>"
        + "".join(f"<th>column_number_{i}</th>" for i in range(12))
        + "</tr></table>",
        # the old pattern: the solution's check printed below the closed solution
        "answer_shown": FIGURE
        + PROSE
        + _exercise("shown", "")
        + _cell("check()", "padding 4 keeps the length", hidden="input"),
        "solution_open": FIGURE + PROSE + _exercise("open", "<p>42</p>", dropdown=False),
        "code_heavy": FIGURE + "<p>Short prose.</p>" + _cell("assert check()\n" * 60),
        "small_figure": "<img src='shrunk.png'>" + PROSE,
        "small_font": FIGURE + PROSE,
        # two references that render alike: the reader cannot tell which is meant
        "ambiguous_cite": FIGURE
        + PROSE
        + "<p>See <a class='reference internal' href='../bibliography.html#id1'>Apple, 2025</a>"
        " and <a class='reference internal' href='../bibliography.html#id2'>Apple, 2025</a>.</p>",
    }
    for name, body in pages.items():
        (chapters / f"{name}.html").write_text(_page(body))
    (chapters / "bad.html").write_text(
        _page(
            "<p>Left raw: $$x, never closed, and <span class='math'>\\(x^{1}^{2}\\)</span></p>"
            "<img src='missing.png'><p>| a | b |</p><p>|---|---|</p>"
            "<div class='cell'><div class='cell_output'><pre>Traceback (most recent call last)"
            "</pre><div class='output stderr'><pre>ValueError: boom\nFailed to load "
            "_MLModelProxy: No module named 'coremltools.libcoremlpython'</pre></div></div></div>",
            head="<script src='https://cdn.example.invalid/x.js'></script>",
        )
    )
    (chapters / "nofig.html").write_text(_page("<p>A chapter without a figure.</p>"))
    # The sources the check reads for font sizes (next to _toc.yml, as in the book).
    (root / "chapters").mkdir()
    code_cell = "```{{code-cell}} ipython3\n{}\n```\n"
    (root / "chapters" / "good.md").write_text(
        "# Good\n\nProse may say fontsize=6.\n\n"
        + code_cell.format('ax.set_title("t", fontsize=12)\nax.legend(fontsize="large")')
    )
    (root / "chapters" / "small_font.md").write_text(
        "# Small\n\n" + code_cell.format('ax.text(0, 0, "t", fontsize=7)')
    )
    toc = ["good", "bad", "nofig", "absent", *(name for name in pages if name != "good")]
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        + "".join(f"  - file: chapters/{name}\n" for name in toc)
    )
    return root


@pytest.fixture(scope="module")
def checked(book_site: Path) -> tuple[int, str, dict[str, str]]:
    """Run the check once on the site: exit code, output, and each page's report."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = check_book.main(
            [
                "--html-dir",
                str(book_site / "html"),
                "--toc",
                str(book_site / "_toc.yml"),
                "--screenshots",
                str(book_site / "shots"),
            ]
        )
    out = buffer.getvalue()
    reports: dict[str, str] = {}
    for line in out.splitlines():
        if line[:4] in {"PASS", "FAIL"}:
            current = line.split()[1]
            reports[current] = line + "\n"
        elif line.startswith("      - "):
            reports[current] += line + "\n"
    return rc, out, reports


def test_check_book_passes_good_pages_and_names_every_problem(
    book_site: Path, checked: tuple[int, str, dict[str, str]]
) -> None:
    rc, out, reports = checked
    assert reports["intro.html"].startswith("PASS")
    assert reports["chapters/good.html"].startswith("PASS"), out
    assert "math=2" in reports["chapters/good.html"]
    bad_report = reports["chapters/bad.html"]
    assert bad_report.startswith("FAIL")
    for problem in (
        "images not loaded",
        "Double exponent",
        "raw TeX delimiters",
        "Markdown table(s) left unrendered",
        "tracebacks: 1",
        "ValueError: boom",
        "coremltools runtime notices in stderr",
        "request(s) to other hosts",
        "remote assets referenced",
        "HTTP 404",
    ):
        assert problem in bad_report, problem
    assert "has no figure" in reports["chapters/nofig.html"]
    assert "not built" in reports["chapters/absent.html"]
    failed = len(reports) - 2
    assert out.strip().endswith(f"check_book: 2 passed, {failed} failed")
    assert rc == 1
    assert (book_site / "shots" / "chapters__good.png").stat().st_size > 0


@pytest.mark.parametrize("page", sorted(NEW_RULES))
def test_each_reader_rule_catches_its_fixture_page(
    page: str, checked: tuple[int, str, dict[str, str]]
) -> None:
    """Each fixture page fails for its own rule, and for no other of the reader's rules."""
    _, out, reports = checked
    report = reports[f"chapters/{page}.html"]
    assert report.startswith("FAIL"), out
    assert NEW_RULES[page] in report, report
    others = [msg for name, msg in NEW_RULES.items() if name != page and msg in report]
    assert not others, report
    for message in NEW_RULES.values():  # the good page breaks none of them
        assert message not in reports["chapters/good.html"]


def test_measurements_are_printed_per_page(checked: tuple[int, str, dict[str, str]]) -> None:
    _, _, reports = checked
    heavy = re.search(r"code=([\d.]+)%", reports["chapters/code_heavy.html"])
    good = re.search(r"code=([\d.]+)%", reports["chapters/good.html"])
    assert heavy and good
    assert float(heavy.group(1)) > 30 > float(good.group(1))  # folded code is not in sight
    assert "wide_code=1/1lines" in reports["chapters/wide_code.html"]
    assert "answers=1" in reports["chapters/answer_shown.html"]
    assert "answers=0" in reports["chapters/good.html"]
    assert "padding 4 keeps the length" in reports["chapters/answer_shown.html"]
    assert "10-pt text at 6.4 px" in reports["chapters/small_figure.html"]
    assert "fontsize=7" in reports["chapters/small_font.html"]


def test_label_size_proxy() -> None:
    # 10 pt at 100 dpi is 13.9 image pixels; an image shown at half its width halves that.
    figure = check_book.FigureScale("f.png", dpi=100, natural=1000, rendered=500)
    assert figure.label_px == pytest.approx(10 * 100 / 72 / 2)
    assert check_book.image_dpi(_png(10, 10, 150)) == pytest.approx(
        150, abs=0.05
    )  # pHYs: whole px per metre
    assert check_book.image_dpi(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == 96


def test_small_font_sizes_are_found_in_code() -> None:
    code = (
        'ax.set_title("a", fontsize=8)\n'
        "ax.tick_params(labelsize=9.5)\n"
        'ax.legend(fontsize="small")\n'
        'plt.rcParams["font.size"] = 7\n'
        'plt.rcParams.update({"legend.fontsize": "x-small"})\n'
        'ax.text(0, 0, "ok", fontsize=10)\n'
        'ax.legend(fontsize="large")\n'
        "image_size = 8  # not a font\n"
    )
    found = check_book.small_font_sizes(code)
    assert found == [
        "fontsize=8",
        "labelsize=9.5",
        'fontsize="small"',
        'font.size"] = 7',
        'fontsize": "x-small"',
    ]


def test_citations_that_read_alike_across_pages_are_found(tmp_path: Path) -> None:
    """One page's 'Apple, 2025' and another's name different entries: both are ambiguous."""

    def cite(text: str, anchor: str) -> str:
        return f"<a class='reference internal' href='../bibliography.html#{anchor}'>{text}</a>"

    one, two = tmp_path / "one.html", tmp_path / "two.html"
    one.write_text(_page(cite("Apple, 2025", "id1") + cite("Vasu <em>et al.</em>, 2023a", "id7")))
    two.write_text(_page(cite("Apple, 2025", "id2") + cite("Vasu <em>et al.</em>, 2023a", "id7")))
    assert check_book.citations(one) == [("Apple, 2025", "id1"), ("Vasu et al., 2023a", "id7")]
    assert check_book.ambiguous_citations([one]) == {}
    assert check_book.ambiguous_citations([one, two]) == {"Apple, 2025": {"id1", "id2"}}
