"""ane_lib.training: the training loop, its determinism, the cache, and the trained MOAT.

Short schedules everywhere except one test: the default digits MOAT, trained (or loaded from
the cache that ``make test`` shares with the book through ANE_LIB_CACHE_DIR) and evaluated on
its 360 test images.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ane_lib import _cache
from ane_lib.data import DigitsSplit, load_digits_split
from ane_lib.models import create_model, to_ane
from ane_lib.training import (
    DIGITS_MOAT_OPTIONS,
    TrainSettings,
    accuracy,
    make_optimizer,
    predict,
    train_classifier,
    train_digits_moat,
)


@pytest.fixture(scope="module")
def digits() -> DigitsSplit:
    return load_digits_split()


@pytest.fixture(scope="module")
def small() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits at their native 8x8, flattened: (1797, 64) and labels (1797,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))


def _reference_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: TrainSettings
) -> list[float]:
    """The training loop written out (as chapter 9 shows it), with torch's own pieces."""
    steps = math.ceil(len(y) / s.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s.lr, total_steps=s.epochs * steps, pct_start=s.warmup_fraction
    )
    g = torch.Generator().manual_seed(s.seed)
    losses = []
    for _ in range(s.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(y), generator=g).split(s.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=s.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(y))
    return losses


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_classifier_is_the_written_out_loop(small: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small
    settings = TrainSettings(epochs=3, batch_size=100, lr=1e-2)
    ours, theirs = _mlp(), _mlp()
    history = train_classifier(ours, x, y, settings, progress=False)
    losses = _reference_loop(theirs, x, y, settings)
    assert _same_weights(ours, theirs)
    assert [h.train_loss for h in history] == losses
    assert [h.epoch for h in history] == [1, 2, 3] and history[0].eval_accuracy is None
    assert not ours.training  # left in eval mode


def test_same_seed_same_weights_other_seed_other_weights(
    small: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = small
    s = TrainSettings(epochs=2, batch_size=64)
    a, b, c = _mlp(), _mlp(), _mlp()
    train_classifier(a, x, y, s, progress=False)
    train_classifier(b, x, y, s, progress=False)
    train_classifier(c, x, y, TrainSettings(epochs=2, batch_size=64, seed=1), progress=False)
    assert _same_weights(a, b) and not _same_weights(a, c)


def test_learns_and_reports_eval_accuracy(small: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small
    model = _mlp()
    before = accuracy(model, x[1500:], y[1500:])
    history = train_classifier(
        model,
        x[:1500],
        y[:1500],
        TrainSettings(epochs=8, lr=1e-2),
        x_eval=x[1500:],
        y_eval=y[1500:],
        progress=False,
    )
    assert before < 0.3 < 0.85 < history[-1].eval_accuracy  # type: ignore[operator]
    assert history[-1].eval_accuracy == accuracy(model, x[1500:], y[1500:])
    assert history[-1].train_loss < history[0].train_loss
    assert all(a.seconds <= b.seconds for a, b in zip(history, history[1:], strict=False))
    logits = predict(model, x[:10], batch_size=3)
    assert logits.shape == (10, 10)
    torch.testing.assert_close(logits, model(x[:10]).detach())


def test_threads_and_global_rng_are_left_as_they_were(
    small: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = small
    threads = torch.get_num_threads()
    model = _mlp()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(model, x[:200], y[:200], TrainSettings(epochs=1), progress=False)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)


def test_progress_bar(
    small: tuple[torch.Tensor, torch.Tensor], capsys: pytest.CaptureFixture
) -> None:
    x, y = small
    s = TrainSettings(epochs=2, batch_size=500)
    train_classifier(_mlp(), x, y, s, x_eval=x[:50], y_eval=y[:50], progress=True)
    err = capsys.readouterr().err
    assert "train: 100%" in err and "| 8/8 [" in err and "epoch 2/2, loss" in err and "acc" in err
    assert all(len(line) <= 79 for line in err.replace("\r", "\n").splitlines())


def test_make_optimizer_is_adamw_with_one_cycle() -> None:
    model = _mlp()
    opt, sched = make_optimizer(model, TrainSettings(epochs=2, lr=0.01), steps_per_epoch=5)
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps == 10
    lrs = []
    for _ in range(10):
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert max(lrs) == pytest.approx(0.01, rel=1e-3) and lrs[0] < 0.001 and lrs[-1] < 0.001


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"batch_size": 1.5}, TypeError, "batch_size must be an int"),
        ({"lr": 0.0}, ValueError, r"lr must be in \(0.0, inf\), got 0.0"),
        ({"warmup_fraction": 1.0}, ValueError, r"warmup_fraction must be in \(0.0, 1.0\)"),
        ({"label_smoothing": -0.1}, ValueError, r"label_smoothing must be in \[0.0, 1.0\)"),
        ({"weight_decay": "0.1"}, TypeError, "weight_decay must be a float"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TrainSettings(**kwargs)


def test_bad_training_arguments_are_named(small: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small
    s = TrainSettings(epochs=1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train_classifier("model", x, y, s)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settings must be a TrainSettings"):
        train_classifier(_mlp(), x, y, {"epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"y_train must be int64 labels of shape \(N,\)"):
        train_classifier(_mlp(), x, y[:-1], s)
    with pytest.raises(ValueError, match="x_eval and y_eval must be given together"):
        train_classifier(_mlp(), x, y, s, x_eval=x)
    with pytest.raises(TypeError, match="data must be a DigitsSplit"):
        train_digits_moat(s, data=(x, y), cache=False)  # type: ignore[arg-type]


def test_digits_moat_is_cached_and_reloaded(
    digits: DigitsSplit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path))
    short = TrainSettings(epochs=1)
    first = train_digits_moat(short, data=digits, progress=False)
    assert not first.from_cache and len(list((tmp_path / "digits_moat").iterdir())) == 1
    again = train_digits_moat(short, data=digits, progress=False)
    assert again.from_cache and _same_weights(first.model, again.model)
    assert again.history == first.history and again.seconds == first.seconds
    assert again.cache_parts == first.cache_parts
    parts = first.cache_parts
    assert parts["settings"]["epochs"] == 1 and parts["data"]["n_test"] == 360
    assert parts["options"] == DIGITS_MOAT_OPTIONS and len(parts["source"]) == 32
    # the model is the registered digits MOAT, in the standard form and eval mode
    assert first.model.config == create_model("digits_moat", **DIGITS_MOAT_OPTIONS).config
    assert first.model.form == "standard" and not first.model.training
    # a fresh training without the cache gives the same weights (determinism)
    fresh = train_digits_moat(short, data=digits, cache=False, progress=False)
    assert not fresh.from_cache and _same_weights(first.model, fresh.model)
    # other settings, other entry: the key holds the settings
    assert _cache.load_entry("digits_moat", parts | {"settings": {"seed": 1}}) is None


def test_trained_digits_moat_reaches_97_percent(digits: DigitsSplit) -> None:
    """The full default schedule (cached in ANE_LIB_CACHE_DIR for the book)."""
    result = train_digits_moat(data=digits, progress=False)
    acc = accuracy(result.model, digits.x_test, digits.y_test)
    assert acc >= 0.97, acc
    assert result.history[-1].eval_accuracy == acc
    # its Neural Engine form predicts the same classes
    ane = to_ane(result.model)
    assert torch.equal(
        predict(ane, digits.x_test).argmax(1), predict(result.model, digits.x_test).argmax(1)
    )


def test_notebook_progress_line_keeps_the_last_state() -> None:
    """In a notebook the bar is one output updated in place (see ane_lib._progress)."""
    from tqdm import tqdm

    from ane_lib._progress import LatestLine, in_notebook

    shown: list[str] = []
    stream = LatestLine(shown.append)
    with tqdm(total=4, file=stream, ncols=60, mininterval=0) as bar:
        for _ in range(4):
            bar.update(1)
    assert shown and all("\r" not in s and "\n" not in s for s in shown)
    assert "4/4" in shown[-1] and "100%" in shown[-1] and len(shown[-1]) <= 60
    assert stream.line == shown[-1] and not in_notebook()  # pytest is no Jupyter kernel
