"""Sphinx extension for the book: no Thebe.

Thebe (live code via Binder) is removed from every page. Jupyter Book always loads
sphinx-thebe, which puts an unpkg.com address and a Binder repository into each page and,
under Sphinx 7, declares its inline ``const THEBE_JS_URL`` twice (a JavaScript error on
every page). The book is static and must work offline, so none of it is wanted.

Loaded by _config.yml (``sphinx: local_extensions: book_ext: scripts/``).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx


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
    # After sphinx-thebe's own handlers (default priority 500) have run.
    app.connect("doctree-resolved", _drop_thebe_config, priority=900)
    app.connect("html-page-context", _drop_thebe_assets, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
