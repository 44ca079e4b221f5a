"""ane_lib.coreml.evaluate: a package over a data set, and the scores of its logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ane_lib.coreml import psnr, run
from ane_lib.coreml.evaluate import LogitScore, run_dataset, score_logits
from ane_lib.coreml.program import import_coremltools

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402, N813


def _program(shape: tuple[int, ...] = (1, 4), weight: Any = None) -> Any:
    """x @ w for x: shape, a stand-in classifier with 3 classes."""
    w = np.random.default_rng(0).standard_normal((shape[-1], 3)).astype(np.float32)

    def fn(x: Any) -> Any:
        return mb.matmul(x=x, y=w if weight is None else weight, name="logits")

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS17)(fn)


def test_run_dataset_is_one_run_per_sample() -> None:
    program = _program()
    samples = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = run_dataset(program, torch.from_numpy(samples), precision="fp32")
    want = np.concatenate(
        [run(program, {"x": s[None]}, precision="fp32")["logits"] for s in samples]
    )
    assert got.dtype == np.float32 and got.shape == (5, 3)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(run_dataset(program, samples), got)  # declared: this program is fp32
    fp16 = run_dataset(program, samples, "neural_engine_fp16")  # every value stored in fp16
    assert np.array_equal(fp16, fp16.astype(np.float16).astype(np.float32))
    assert 0 < np.abs(fp16 - got).max() < 1e-2 * np.abs(got).max()


def test_run_dataset_checks_the_samples() -> None:
    program = _program()
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 4\) with N >= 1"):
        run_dataset(program, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="samples must have shape"):
        run_dataset(program, np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="precision must be one of"):
        run_dataset(program, np.zeros((2, 4), np.float32), precision="int8")
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 4\)"):
        run_dataset(_program((2, 4)), np.zeros((2, 4), np.float32))  # not a batch-1 program


def test_score_logits() -> None:
    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    logits = reference + np.array([[0, 0, 0], [0, 0, 1.5], [0, 0, 0], [0, 0, 0]])
    labels = np.array([0, 1, 2, 0])
    score = score_logits(logits, labels, reference)
    assert isinstance(score, LogitScore) and score.samples == 4
    assert score.accuracy == 0.5  # sample 1 now says class 2, sample 3 was wrong already
    assert score.agreement == 0.75
    assert score.psnr_db == pytest.approx(psnr(reference, logits))
    assert score.to_dict()["agreement"] == 0.75
    same = score_logits(torch.tensor(reference), torch.tensor(labels), reference)
    assert same.agreement == 1.0 and same.psnr_db == float("inf")
    with pytest.raises(ValueError, match=r"same shape \(N, classes\) and labels \(N,\)"):
        score_logits(logits[:3], labels, reference)
