"""A progress bar for long loops: tqdm in a terminal, one line updated in place in a notebook.

tqdm redraws its bar with carriage returns. A terminal, and a live Jupyter notebook, show the
last state; but a notebook saved and rendered (as this book's chapters are) keeps every state,
one line each, because the renderer joins the stream's chunks with newlines. Inside a Jupyter
kernel the bar is therefore drawn into one display output that is updated in place: live, the
reader sees it move; saved, only its final state remains.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from ane_lib._optional import import_optional

__all__ = ["LatestLine", "in_notebook", "progress_bar"]

_LINE_BREAK = re.compile(r"[\r\n]")


class LatestLine(io.TextIOBase):
    """A text stream that keeps only the last non-empty line written to it and passes it to
    ``show`` on every ``flush`` (tqdm writes ``"\\r" + bar`` and flushes at each redraw)."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__()
        self._show = show
        self.line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        parts = [p for p in _LINE_BREAK.split(text) if p.strip()]
        if parts:
            self.line = parts[-1]
        return len(text)

    def flush(self) -> None:
        if self.line:
            self._show(self.line)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ``ZMQInteractiveShell``)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _display_line() -> Callable[[str], None]:
    """A function that shows a line of text in one notebook output, replacing the previous."""
    from IPython.display import display

    handle = display({"text/plain": ""}, raw=True, display_id=True)

    def show(line: str) -> None:
        handle.update({"text/plain": line}, raw=True)

    return show


def progress_bar(total: int, *, desc: str, width: int = 79) -> Any:
    """A tqdm bar over ``total`` steps, at most ``width`` characters wide; on stderr, or in one
    updating output inside a notebook. Raises ImportError naming the ``train`` extra when tqdm
    is missing."""
    tqdm = import_optional(
        "tqdm", extra="train", needed_for="the progress bar (or pass progress=False)"
    ).tqdm
    stream = LatestLine(_display_line()) if in_notebook() else None
    return tqdm(
        total=total,
        desc=desc,
        file=stream,
        ascii=False if stream is not None else None,  # a notebook shows Unicode blocks
        ncols=width,
        mininterval=0.5,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
        "[{elapsed}<{remaining}{postfix}]",
    )
