"""The zoo (ane_lib.zoo): Hugging Face models built offline from configurations, the table's
rows on a few tiny models (real exports), the fix of the field guide, and the command line on a
zoo package (a model not registered in ane_lib)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ane_lib.cli import main as cli_main
from ane_lib.coreml import ExportError, TensorSpec, export, read_export_metadata
from ane_lib.coreml.signature import sample_inputs
from ane_lib.models import list_models
from ane_lib.zoo import ZOO, build, entry_point, zoo_entry, zoo_inputs, zoo_names
from ane_lib.zoo.catalog import NUM_LABELS
from ane_lib.zoo.fixes import mobilevit_v2_patch_layout
from ane_lib.zoo.table import COLUMNS, ZooRow, evaluate, rows_markdown, torch_fp16_psnr

transformers = pytest.importorskip("transformers")


def _logits(model: torch.nn.Module, name: str, seed: int = 1) -> torch.Tensor:
    inputs = sample_inputs(zoo_inputs(name, tiny=True), seed)
    with torch.no_grad():
        return model(**inputs).logits


def test_catalog_has_fifteen_hugging_face_models_none_registered() -> None:
    names = zoo_names()
    assert len(names) == len(set(names)) >= 15
    assert len(zoo_names("image")) >= 15 and len(zoo_names("text")) >= 2
    assert not set(names) & set(list_models())  # the user's models, not ane_lib's
    for entry in ZOO:
        assert hasattr(transformers, entry.config_class), entry.config_class
        assert hasattr(transformers, entry.model_class), entry.model_class
    with pytest.raises(ValueError, match="name"):
        zoo_entry("no_such_model")
    with pytest.raises(ValueError, match="task"):
        zoo_names("audio")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", zoo_names())
def test_every_tiny_model_builds_offline_and_runs(name: str) -> None:
    logits = _logits(build(name, tiny=True), name)
    assert logits.shape == (1, NUM_LABELS)
    assert torch.isfinite(logits).all()
    # unit_variance_init_ gives the logits the scale of a trained model's, not 1e-29
    assert 0.1 < float(logits.abs().max()) < 100


def test_build_is_deterministic_and_leaves_the_callers_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build("resnet50", tiny=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build("resnet50", tiny=True)
    c = build("resnet50", tiny=True, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_inputs_and_entry_points() -> None:
    image = zoo_inputs("vit_base", tiny=True)
    assert list(image) == ["pixel_values"] and image["pixel_values"].shape == (1, 3, 64, 64)
    text = zoo_inputs("bert_base")
    assert list(text) == ["input_ids", "attention_mask"]
    assert text["input_ids"].shape == (1, 128) and text["input_ids"].dtype == torch.int32
    assert text["input_ids"].high == transformers.BertConfig().vocab_size
    assert text["attention_mask"].high == 2
    # a vision transformer's position embeddings follow the size asked for
    assert build("vit_base", tiny=True, size=32).config.image_size == 32
    assert entry_point("swin_tiny") == "ane_lib.zoo:build('swin_tiny')"
    assert (
        entry_point("swin_tiny", tiny=True, size=64) == "ane_lib.zoo:build('swin_tiny', tiny=True)"
    )
    assert (
        entry_point("vit_base", size=96, seed=2) == "ane_lib.zoo:build('vit_base', size=96, seed=2)"
    )


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZooRow, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    row = evaluate("resnet50", tiny=True, samples=2, workdir=folder, keep=True)
    return row, folder / "resnet50.mlpackage"


def test_a_row_of_the_table(resnet: tuple[ZooRow, Path]) -> None:
    row, path = resnet
    assert row.exported and row.stage is None and row.error is None
    assert row.ops and row.layout_ops is not None and row.max_rank == 4
    assert row.padded_bytes is not None and row.real_bytes is not None
    assert row.padded_bytes >= row.real_bytes > 0
    assert row.fp32_ops == 0 and row.rules == ()  # no error or warning of the rule table
    assert row.costs is not None and "last-axis-padding" in row.costs
    assert row.psnr_db is not None and row.psnr_db > 50 and row.top1 == 1.0 and row.samples == 2
    # PyTorch's own fp16 forward loses about as much as the package does
    assert row.torch_fp16_psnr_db is not None and abs(row.torch_fp16_psnr_db - row.psnr_db) < 6
    assert row.export_s is not None and row.verify_s is not None
    assert read_export_metadata(path)["entry_point"] == entry_point("resnet50", tiny=True)
    assert row.to_dict()["name"] == "resnet50"
    table = rows_markdown([row], ["model", "exports", "rank", "rules", "top-1"])
    assert table.splitlines()[-1] == "| resnet50 | yes | 4 | none | 100% |"
    with pytest.raises(ValueError, match="columns"):
        rows_markdown([row], ["model", "colour"])
    assert set(COLUMNS) >= {"ops", "layout", "rank", "real", "padded", "fp32", "rules", "PSNR"}


def test_nan_in_fp16_is_a_verify_failure_that_names_the_rule(tmp_path: Path) -> None:
    # DeBERTa masks with torch.finfo(float32).min, which is -inf in an fp16 package
    row = evaluate("deberta_v3_base", tiny=True, samples=1, workdir=tmp_path)
    assert row.exported and row.rules is not None and "negative-infinity" in row.rules
    assert row.stage == "verify" and row.error is not None and "inf" in row.error
    assert not row.verified


def test_a_failure_is_a_row_with_the_users_message(tmp_path: Path) -> None:
    row = evaluate("hiera_base", tiny=True, workdir=tmp_path)
    assert not row.exported and row.stage == "export"
    assert row.error is not None and "rank <= 5" in row.error
    assert "HieraMaskUnitAttention" in row.reason and "coremltools said" not in row.reason
    assert row.psnr_db is None and not row.verified
    assert list(tmp_path.iterdir()) == []  # nothing left on disk


def test_a_text_model_with_token_ids_and_a_mask(tmp_path: Path) -> None:
    row = evaluate("bert_base", tiny=True, samples=2, workdir=tmp_path)
    assert row.exported and row.inputs == "input_ids + attention_mask (1, 16)"
    assert "new_ones (decomposed)" in row.graph_fixes
    assert row.psnr_db is not None and math.isfinite(row.psnr_db) and row.top1 == 1.0


def test_a_module_with_its_inputs(tmp_path: Path) -> None:
    model = build("convnext_tiny", tiny=True)
    row = evaluate(model, zoo_inputs("convnext_tiny", tiny=True), name="mine", workdir=tmp_path)
    assert row.name == "mine" and row.architecture == "ConvNextForImageClassification"
    assert row.exported
    with pytest.raises(ValueError, match="inputs"):
        evaluate(model)
    with pytest.raises(TypeError, match="model"):
        evaluate(3)  # type: ignore[arg-type]


def test_mobilevit_v2_patch_layout_is_the_same_model_without_im2col() -> None:
    model = build("mobilevit_v2", tiny=True)
    fixed = mobilevit_v2_patch_layout(model)
    assert torch.equal(_logits(fixed, "mobilevit_v2"), _logits(model, "mobilevit_v2"))
    x = sample_inputs(zoo_inputs("mobilevit_v2", tiny=True), 0)["pixel_values"]

    def aten_ops(m: torch.nn.Module) -> set[str]:
        graph = torch.export.export(m, (x,)).run_decompositions({}).graph
        return {str(n.target) for n in graph.nodes if n.op == "call_function"}

    assert "aten.im2col.default" in aten_ops(model)
    assert not {"aten.im2col.default", "aten.col2im.default"} & aten_ops(fixed)
    with pytest.raises(ValueError, match="MobileViTV2Layer"):
        mobilevit_v2_patch_layout(build("resnet50", tiny=True))


def test_cli_reports_and_verifies_a_zoo_package(
    resnet: tuple[ZooRow, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = resnet
    assert cli_main(["report", str(path)]) == 0
    assert "ANE report" in capsys.readouterr().out
    # the package records its entry point, but running code stays the user's decision
    assert cli_main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ane_lib.zoo:build('resnet50', tiny=True)" in err and "--model" in err
    model = "ane_lib.zoo:build('resnet50', tiny=True)"
    assert cli_main(["verify", str(path), "--model", model, "--min-psnr", "50"]) == 0
    assert "PASS" in capsys.readouterr().out
    # another seed is another model: the check fails (exit 1)
    other = "ane_lib.zoo:build('resnet50', tiny=True, seed=1)"
    assert cli_main(["verify", str(path), "--model", other, "--min-psnr", "50"]) == 1


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("ane_lib.zoo:build('resnet50', tiny=__import__('os'))", "literal"),
        ("ane_lib.zoo:build(**{'name': 'x'})", "kwargs"),
        ("ane_lib.zoo:build('no_such_model')", "no_such_model"),
        ("ane_lib.zoo:nothing", "nothing"),
        ("ane_lib.zoo:", "module:function"),
    ],
)
def test_cli_refuses_bad_entry_points(
    resnet: tuple[ZooRow, Path], entry: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = resnet
    assert cli_main(["verify", str(path), "--model", entry]) == 2
    assert words in capsys.readouterr().err


def test_a_cache_output_is_named_before_torch_export(tmp_path: Path) -> None:
    # GPT-2 as its configuration comes returns its key/value cache: named, with the way out
    config = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, num_labels=3)
    model = transformers.GPT2ForSequenceClassification(config).eval()
    ids = {"input_ids": TensorSpec((1, 8), torch.int32, high=100)}
    with pytest.raises(ExportError, match="DynamicCache") as info:
        export(model, ids, tmp_path / "gpt2.mlpackage")
    assert "use_cache=False" in str(info.value)
    assert not (tmp_path / "gpt2.mlpackage").exists()


def test_markdown_cells_are_escaped() -> None:
    row = ZooRow(
        "mobilenet_v2", "a | b", "x", 0, ops=3, graph_fixes=("__and__.Tensor (decomposed)",)
    )
    line = rows_markdown([row], ["model", "architecture", "fixes"]).splitlines()[-1]
    assert line == r"| mobilenet_v2 | a \| b | \_\_and\_\_.Tensor (decomposed) |"


def test_torch_fp16_yardstick_drops_caches_made_in_fp32() -> None:
    """LeViT caches its attention biases at its first forward in eval mode; the half-precision
    copy of the yardstick must not keep that fp32 cache (PyTorch would refuse the matmul)."""
    model = build("levit_128s", tiny=True).eval()
    spec = zoo_inputs("levit_128s", tiny=True)
    with torch.no_grad():
        model(**sample_inputs(spec, 0))  # fills the cache, in fp32
    attention = next(m for m in model.modules() if hasattr(m, "attention_bias_cache"))
    assert attention.attention_bias_cache  # the cache the copy would inherit
    assert 40 < torch_fp16_psnr(model, spec, 2) < 120
