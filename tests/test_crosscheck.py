"""Apple's Core AI runtime as a second opinion on this project's Core ML executor: the same
weights exported to both stacks in fp32 must give the same logits (issue 13's cross-check)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ane_lib import coreai, coreml
from ane_lib.crosscheck import runtimes_agree
from ane_lib.models import create_model

pytestmark = pytest.mark.skipif(not coreai.available(), reason=str(coreai.unavailable_reason()))


def test_tiny_moat_1_runtime_agrees_with_executor(tmp_path: Path) -> None:
    """tiny-MOAT-1, ANE form, 256x256, local 8x8 windows, LePE: max relative error <= 1e-5."""
    torch.manual_seed(0)
    model = create_model(
        "tiny_moat_1", form="ane", pe="lepe", attention="local", window=8, image_size=256
    ).eval()
    shape = (1, 3, 256, 256)
    package = coreml.export(model, shape, tmp_path / "m.mlpackage", precision="fp32")
    program = coreai.export(model, shape, tmp_path / "m.aimodel", precision="fp32")
    images = [coreml.example_input(shape, seed=1)]
    agreement = runtimes_agree(package, program, images)
    assert agreement.samples == 1 and agreement.top1_same == 1
    assert 0 < agreement.max_rel_error <= 1e-5  # two implementations, not one: never exactly 0
    with torch.no_grad():
        reference = model(images[0]).numpy()
    apple = coreai.run(program, {"image": images[0]})["logits"]
    assert abs(apple - reference).max() <= 1e-5 * abs(reference).max()


def test_agreement_catches_a_different_model(tmp_path: Path) -> None:
    """The measure is not blind: two different weight sets disagree."""
    shape = (1, 3, 16, 16)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval())
    package = coreml.export(nets[0], shape, tmp_path / "a.mlpackage", precision="fp32")
    same = coreai.export(nets[0], shape, tmp_path / "a.aimodel", precision="fp32")
    other = coreai.export(nets[1], shape, tmp_path / "b.aimodel", precision="fp32")
    images = [torch.rand(shape) for _ in range(3)]
    assert runtimes_agree(package, same, images).max_rel_error < 1e-5
    assert runtimes_agree(package, other, images).max_rel_error > 0.1
    with pytest.raises(ValueError, match="no sample"):
        runtimes_agree(package, same, [])


def test_trained_digits_moat_every_test_image(tmp_path: Path) -> None:
    """Chapter 9's trained digits MOAT (from the library's cache): the fp32 programs of both
    stacks pick the same class on every test image; the fp16 programs of both stacks agree with
    PyTorch fp32 on every test image, at a PSNR well above 40 dB."""
    from ane_lib.data import load_digits_split
    from ane_lib.models import to_ane
    from ane_lib.training import train_digits_moat

    data = load_digits_split()
    model = to_ane(train_digits_moat(data=data, progress=False).model).eval()
    shape = (1, *data.x_test.shape[1:])
    images = [data.x_test[i : i + 1] for i in range(len(data.x_test))]
    package = coreml.export(model, shape, tmp_path / "d.mlpackage", precision="fp32")
    program = coreai.export(model, shape, tmp_path / "d.aimodel", precision="fp32")
    agreement = runtimes_agree(package, program, images)
    assert agreement.samples == len(images) == 360
    assert agreement.top1_same == 360 and agreement.max_rel_error <= 1e-5
    fp16_ml = coreml.verify(
        coreml.export(model, shape, tmp_path / "h.mlpackage"), model, inputs=images
    )
    fp16_ai = coreai.verify(
        coreai.export(model, shape, tmp_path / "h.aimodel"), model, inputs=images
    )
    for check in (fp16_ml, fp16_ai):
        assert check.samples == 360 and check.top1_agreement == 1.0 and check.psnr_db > 50
