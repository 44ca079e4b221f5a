"""Train a classifier on the CPU, deterministically, and cache the digits MOAT it trains best.

- :func:`train_classifier` trains any model mapping ``(B, ...)`` to logits ``(B, classes)``
  with AdamW, a one-cycle learning-rate schedule and label-smoothed cross-entropy, in
  mini-batches drawn in a seeded order, with a progress bar. The same seed gives the same
  weights, bit for bit: everything random is drawn from the seed, and the work runs on one CPU
  thread (the fastest for these small tensors, and the order of every floating-point sum is
  then fixed).
- :func:`train_digits_moat` builds ``create_model("digits_moat", **DIGITS_MOAT_OPTIONS)``,
  trains it on :func:`ane_lib.data.load_digits_split` and caches the result (see
  :mod:`ane_lib._cache`), keyed on the settings, the data split, the torch and library versions
  and the library's model code: later calls load it in a fraction of a second.
- :func:`predict` and :func:`accuracy` evaluate a model in batches.

Needs scikit-learn for the data and tqdm for the progress bar (``pip install 'ane-lib[train]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib import _cache
from ane_lib._checks import check_nonnegative_int, check_positive_int
from ane_lib._progress import progress_bar
from ane_lib.data import DigitsSplit, load_digits_split
from ane_lib.models import create_model

__all__ = [
    "DIGITS_MOAT_OPTIONS",
    "EpochStats",
    "TrainResult",
    "TrainSettings",
    "accuracy",
    "make_optimizer",
    "predict",
    "train_classifier",
    "train_digits_moat",
]

#: How chapter 9's MOAT is built: ``create_model("digits_moat", **DIGITS_MOAT_OPTIONS)``.
#: 32x32 inputs (the smallest MOAT accepts: its output stride is 32), ten classes, global
#: attention with a relative position bias in stages 3 and 4 (2x2 and 1x1 maps).
DIGITS_MOAT_OPTIONS: dict[str, Any] = {
    "num_classes": 10,
    "image_size": 32,
    "pe": "rpe",
    "attention": "global",
}


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`train_classifier` does, fixed in advance (nothing is tuned on the test set).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step; the last batch of an epoch may be smaller.
        lr: peak learning rate of the one-cycle schedule (``OneCycleLR``).
        warmup_fraction: share of the steps spent warming up to ``lr`` (``pct_start``).
        weight_decay: AdamW's decoupled weight decay.
        label_smoothing: of the cross-entropy loss.
        seed: seeds the initial weights (in :func:`train_digits_moat`) and the batch order.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    warmup_fraction: float = 0.2
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_nonnegative_int("seed", self.seed)
        for name, low, high in (
            ("lr", 0.0, math.inf),
            ("warmup_fraction", 0.0, 1.0),
            ("weight_decay", 0.0, math.inf),
            ("label_smoothing", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {value!r}")
            open_low = name in ("lr", "warmup_fraction")
            if not (value > low if open_low else value >= low) or not value < high:
                bounds = f"{'(' if open_low else '['}{low}, {high})"
                raise ValueError(f"{name} must be in {bounds}, got {value!r}")


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean training loss over its samples, accuracy on the evaluation set (None
    when there is none) and the seconds since training started."""

    epoch: int
    train_loss: float
    eval_accuracy: float | None
    seconds: float


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model (standard form, eval mode) and how it got there.

    ``seconds`` is the training time measured when it was trained (not when loaded from the
    cache); ``from_cache`` says whether this call loaded it; ``cache_parts`` is everything the
    weights depend on (the cache key's content).
    """

    model: nn.Module
    history: tuple[EpochStats, ...]
    settings: TrainSettings
    seconds: float
    from_cache: bool
    cache_parts: dict[str, Any]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread, then restore the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_examples(x: object, y: object, what: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"x_{what} and y_{what} must be torch.Tensors, got {type(x).__name__} and "
            f"{type(y).__name__}"
        )
    if y.ndim != 1 or y.dtype != torch.int64 or len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"y_{what} must be int64 labels of shape (N,) with N = len(x_{what}) >= 1, got "
            f"{y.dtype} {tuple(y.shape)} for x_{what} of shape {tuple(x.shape)}"
        )


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(N, classes)`` of ``model`` in eval mode for ``x: (N, ...)``, in batches.

    The model's training flag is restored afterwards.
    """
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(chunk) for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Fraction of ``x: (N, ...)`` whose arg-max logit is the label ``y: (N,)``."""
    _check_examples(x, y, "eval")
    return float((predict(model, x, batch_size=batch_size).argmax(1) == y).double().mean())


def make_optimizer(
    model: nn.Module, settings: TrainSettings, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over all parameters and a one-cycle schedule stepped once per batch."""
    check_positive_int("steps_per_epoch", steps_per_epoch)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        total_steps=settings.epochs * steps_per_epoch,
        pct_start=settings.warmup_fraction,
    )
    return optimizer, scheduler


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    return progress_bar(total, desc="train")


def train_classifier(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    settings: TrainSettings,
    *,
    x_eval: torch.Tensor | None = None,
    y_eval: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[EpochStats, ...]:
    """Train ``model`` in place on ``x_train: (N, ...)``, ``y_train: (N,)``; one stat per epoch.

    Each epoch visits the training set in an order drawn from a generator seeded with
    ``settings.seed``, in batches of ``settings.batch_size``: forward in training mode,
    label-smoothed cross-entropy, backward, an AdamW step, a step of the one-cycle schedule
    (:func:`make_optimizer`). After each epoch the accuracy on ``(x_eval, y_eval)`` is recorded
    if they are given; it is only reported, never used to choose anything. With ``progress``
    a tqdm bar shows the batches done, the last epoch's loss and evaluation accuracy.

    The model is left in eval mode. Runs on one CPU thread (restored afterwards), so the same
    model, data and settings give bitwise the same weights.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    _check_examples(x_train, y_train, "train")
    if (x_eval is None) != (y_eval is None):
        raise ValueError("x_eval and y_eval must be given together (or neither)")
    if x_eval is not None:
        _check_examples(x_eval, y_eval, "eval")
    steps = math.ceil(len(y_train) / settings.batch_size)
    optimizer, scheduler = make_optimizer(model, settings, steps)
    order = torch.Generator().manual_seed(settings.seed)
    history: list[EpochStats] = []
    start = time.perf_counter()
    with _one_thread(), _progress_bar(settings.epochs * steps, progress) as bar:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            total = 0.0
            for batch in torch.randperm(len(y_train), generator=order).split(settings.batch_size):
                loss = F.cross_entropy(
                    model(x_train[batch]), y_train[batch], label_smoothing=settings.label_smoothing
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(batch)
                if bar is not None:
                    bar.update(1)
            model.eval()
            evaluated = None
            if x_eval is not None and y_eval is not None:
                evaluated = accuracy(model, x_eval, y_eval)
            stats = EpochStats(epoch, total / len(y_train), evaluated, time.perf_counter() - start)
            history.append(stats)
            if bar is not None:
                shown = f"epoch {epoch}/{settings.epochs}, loss {stats.train_loss:.3f}"
                if evaluated is not None:
                    shown += f", acc {evaluated:.1%}"
                bar.set_postfix_str(shown, refresh=True)
    return tuple(history)


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """SHA-256 of the library code the trained weights depend on: the model's layers, this
    training code and the data loading (a change to any of them must not reuse old weights)."""
    root = Path(__file__).resolve().parent
    files = sorted(
        [*root.glob("functional/*.py"), *root.glob("nn/*.py"), *root.glob("models/*.py")]
        + [root / "_checks.py", root / "data.py", root / "training.py"]
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def _cache_parts(settings: TrainSettings, data: DigitsSplit) -> dict[str, Any]:
    import ane_lib

    return {
        "model": "digits_moat",
        "options": DIGITS_MOAT_OPTIONS | {"image_size": data.image_size},
        "settings": dataclasses.asdict(settings),
        "data": data.describe(),
        "versions": {"ane_lib": ane_lib.__version__, "torch": torch.__version__},
        "source": _source_digest(),
    }


def train_digits_moat(
    settings: TrainSettings | None = None,
    *,
    data: DigitsSplit | None = None,
    cache: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train chapter 9's MOAT on the digits, or load it from the cache.

    Args:
        settings: the training settings (default :class:`TrainSettings`: 10 epochs).
        data: the split to train on (default :func:`ane_lib.data.load_digits_split`: 32x32,
            20% test, seed 0). Its test set is evaluated after every epoch, for the history.
        cache: reuse weights cached for exactly these settings, data, library and torch
            versions, and cache newly trained ones (see :mod:`ane_lib._cache`; the folder is
            ``$ANE_LIB_CACHE_DIR`` or the user's cache folder).
        progress: draw a progress bar while training.

    Returns:
        A :class:`TrainResult` holding the model in the standard form (``to_ane`` converts it),
        in eval mode, and the per-epoch history.
    """
    settings = TrainSettings() if settings is None else settings
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    data = load_digits_split() if data is None else data
    if not isinstance(data, DigitsSplit):
        raise TypeError(f"data must be a DigitsSplit, got {type(data).__name__}")
    parts = _cache_parts(settings, data)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights, leave the caller's RNG
        torch.manual_seed(settings.seed)
        model = create_model("digits_moat", **parts["options"])
    if cache and (entry := _cache.load_entry("digits_moat", parts)) is not None:
        model.load_state_dict(entry["state_dict"])
        history = tuple(EpochStats(**stats) for stats in entry["history"])
        return TrainResult(model.eval(), history, settings, entry["seconds"], True, parts)
    start = time.perf_counter()
    history = train_classifier(
        model,
        data.x_train,
        data.y_train,
        settings,
        x_eval=data.x_test,
        y_eval=data.y_test,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    if cache:
        payload = {
            "state_dict": model.state_dict(),
            "history": [dataclasses.asdict(stats) for stats in history],
            "seconds": seconds,
        }
        _cache.save_entry("digits_moat", parts, payload)
    return TrainResult(model, history, settings, seconds, False, parts)
