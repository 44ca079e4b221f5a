"""Tests for the book's configuration and its build scripts (scripts/*.py).

The page checker is tested end to end on a small synthetic site in the real headless Chromium
(skipped only where no Chromium is installed; `make test` installs it).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
import yaml
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


def _page(body: str, *, head: str = "", up: str = "../") -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><script>window.MathJax ="
        " {options: {processHtmlClass: 'tex2jax_process|mathjax_process|math|output_area'}}"
        "</script>"
        f"<script defer src='{up}mathjax/tex-chtml.js'></script>"
        f"{head}</head><body><main><article class='bd-article'>{body}</article></main>"
        "</body></html>"
    )


def _mathjax_source() -> Path:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "static" / "mathjax"


@pytest.fixture(scope="module")
def book_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if check_book.find_chromium(None) is None:
        pytest.skip("no Chromium installed (make test installs Debian's chromium)")
    root = tmp_path_factory.mktemp("site")
    html = root / "html"
    (html / "chapters").mkdir(parents=True)
    shutil.copytree(_mathjax_source(), html / "mathjax")
    # 1x1 PNG
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a55fbb"
        "5e0000000049454e44ae426082"
    )
    (html / "chapters" / "fig.png").write_bytes(png)
    (html / "index.html").write_text(_page("<p>index</p>", up=""))
    (html / "intro.html").write_text(_page("<p>No math, no figure: fine for the intro.</p>", up=""))
    (html / "chapters" / "good.html").write_text(
        _page(
            "<p>Inline <span class='math notranslate nohighlight'>\\(y = Wx\\)</span></p>"
            "<div class='math notranslate nohighlight'>\\[a^2 + b^2 = c^2\\]</div>"
            "<table><tr><th>a</th></tr><tr><td>1</td></tr></table>"
            "<pre>| code | may |\n|---|---|</pre>"
            "<img src='fig.png'><div class='cell'><div class='cell_output'>"
            "<div class='output stderr'><pre>UserWarning: fine</pre></div></div></div>"
        )
    )
    (html / "chapters" / "bad.html").write_text(
        _page(
            "<p>Left raw: $$x, never closed, and <span class='math'>\\(x^{1}^{2}\\)</span></p>"
            "<img src='missing.png'><p>| a | b |</p><p>|---|---|</p>"
            "<div class='cell'><div class='cell_output'><pre>Traceback (most recent call last)"
            "</pre><div class='output stderr'><pre>ValueError: boom\nFailed to load "
            "_MLModelProxy: No module named 'coremltools.libcoremlpython'</pre></div></div></div>",
            head="<script src='https://cdn.example.invalid/x.js'></script>",
        )
    )
    (html / "chapters" / "nofig.html").write_text(_page("<p>A chapter without a figure.</p>"))
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: chapters/good\n  - file: chapters/bad\n  - file: chapters/nofig\n"
        "  - file: chapters/absent\n"
    )
    return root


def test_check_book_passes_good_pages_and_names_every_problem(
    book_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = book_site / "shots"
    rc = check_book.main(
        [
            "--html-dir",
            str(book_site / "html"),
            "--toc",
            str(book_site / "_toc.yml"),
            "--screenshots",
            str(shots),
        ]
    )
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line[:4] in {"PASS", "FAIL"}}
    assert lines["intro.html"].startswith("PASS")
    assert lines["chapters/good.html"].startswith("PASS"), out
    assert "math=2" in lines["chapters/good.html"]
    assert lines["chapters/bad.html"].startswith("FAIL")
    bad_report = out.split("chapters/bad.html", 1)[1].split("chapters/nofig.html", 1)[0]
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
    assert "has no figure" in out.split("chapters/nofig.html", 1)[1]
    assert "not built" in out.split("chapters/absent.html", 1)[1]
    assert out.strip().endswith("check_book: 2 passed, 3 failed")
    assert rc == 1
    assert (shots / "chapters__good.png").stat().st_size > 0
