"""Sphinx extension for the book: quiet coremltools' import notices, no Thebe.

1. Coremltools' Linux-only import notices are dropped from stderr outputs.

On Linux, ``import coremltools`` logs one "Failed to load _ML...Proxy: No module named
'coremltools.libcoremlpython'" line per Core ML runtime class, because there is no Core ML
runtime outside macOS. They are expected and say nothing about the chapter, so the rendered
pages leave them out. Every other stderr line (warnings included) stays visible: a blanket
``nb_output_stderr: remove`` would hide real problems too.

2. Thebe (live code via Binder) is removed from every page. Jupyter Book always loads
sphinx-thebe, which puts an unpkg.com address and a Binder repository into each page and,
under Sphinx 7, declares its inline ``const THEBE_JS_URL`` twice (a JavaScript error on
every page). The book is static and must work offline, so none of it is wanted.

Loaded by _config.yml (``sphinx: local_extensions: book_ext: scripts/``).
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

#: One stderr line printed by ``import coremltools`` on a machine without the Core ML runtime.
COREML_PROXY_NOTICE = re.compile(
    r"^Failed to load _ML\w*Proxy: No module named 'coremltools\.libcoremlpython'\s*$"
)


def strip_notices(text: str) -> str:
    """Return ``text`` without the coremltools proxy notices (other lines kept, in order)."""
    kept = [line for line in text.splitlines(keepends=True) if not COREML_PROXY_NOTICE.match(line)]
    return "".join(kept)


def _filter_stderr(app: Sphinx, doctree: nodes.document) -> None:
    """Rewrite or remove myst-nb stderr blocks (literal_block with class ``stderr``)."""
    for block in list(doctree.findall(nodes.literal_block)):
        if "stderr" not in block["classes"]:
            continue
        text = block.astext()
        cleaned = strip_notices(text)
        if cleaned == text:
            continue
        parent = block.parent
        if not cleaned.strip():
            parent.remove(block)
            # An output container left empty would render as an empty box.
            if isinstance(parent, nodes.container) and not parent.children:
                parent.parent.remove(parent)
            continue
        # The HTML writer only highlights blocks whose rawsource equals their text.
        block.rawsource = cleaned
        block.children = []
        block += nodes.Text(cleaned)


def _is_thebe_script(script: Any) -> bool:
    filename = getattr(script, "filename", None) or ""
    body = getattr(script, "attributes", {}).get("body", "")
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def _drop_thebe_assets(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Remove sphinx-thebe's scripts and stylesheet from the page being written."""
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe_script(s)]
    if "css_files" in context:
        context["css_files"] = [
            c
            for c in context["css_files"]
            if not str(getattr(c, "filename", c)).endswith("sphinx-thebe.css")
        ]


def _drop_thebe_config(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Remove the ``text/x-thebe-config`` blocks sphinx-thebe appends to each page."""
    for raw in list(doctree.findall(nodes.raw)):
        text = raw.astext()
        if "text/x-thebe-config" in text or text.startswith("<script>kernelName ="):
            raw.parent.remove(raw)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("doctree-read", _filter_stderr)
    # After sphinx-thebe's own handlers (default priority 500) have run.
    app.connect("doctree-resolved", _drop_thebe_config, priority=900)
    app.connect("html-page-context", _drop_thebe_assets, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
