"""The rule table on hand-built graphs (no converter): each rule fires where it should and
only there, the bytes follow the 64-byte rule worked by hand, and the report's views add up."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.ane_rules import (
    RULES,
    SEVERITIES,
    TOP_LEVEL,
    UNKNOWN_MODULE,
    Graph,
    ModulePaths,
    Op,
    Report,
    Value,
    analyse,
    rule,
    stage_of,
)
from ane_lib.ane_rules.module_paths import candidate_node_names
from ane_lib.ane_rules.text import format_bytes

ITEMSIZE = {"fp16": 2, "fp32": 4, "int8": 1, "int32": 4, "bool": 1}

# ----------------------------------------------------------------------------- builders


def val(shape: Sequence[int | str], dtype: str = "fp16", name: str = "v", **kw: Any) -> Value:
    return Value(name, tuple(shape), dtype, **kw)


def op(
    op_type: str,
    out: Sequence[int | str],
    *,
    inp: Sequence[Value] = (),
    dtype: str = "fp16",
    name: str = "op",
    module: str | None = "layer",
    **attrs: Any,
) -> Op:
    return Op(name, op_type, tuple(inp), (val(out, dtype, name=f"{name}_out"),), attrs, module)


def graph(*ops: Op, inputs: Sequence[Value] = ()) -> Graph:
    return Graph(tuple(ops), inputs=tuple(inputs), module_paths=True)


def fires(rule_id: str, g: Graph) -> list[str]:
    """Names of the ops (or "input") where rule ``rule_id`` fires."""
    return [f.op.name if f.op is not None else "input" for f in rule(rule_id)(g)]


def padded_by_hand(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows of the last axis, each rounded up to a multiple of 64 bytes (Apple 2022)."""
    rows = math.prod(shape[:-1]) if shape else 1
    last = shape[-1] if shape else 1
    return rows * math.ceil(last * itemsize / 64) * 64


X = val((1, 16, 1, 64), name="x", kind="input")

# One op that breaks each rule, and one that keeps it: (rule id, bad, good).
CASES: list[tuple[str, Op, Op]] = [
    ("rank", op("reshape", (1, 2, 3, 4, 5, 6)), op("reshape", (2, 3, 4, 5, 6))),
    ("fp32", op("relu", (1, 64), dtype="fp32"), op("relu", (1, 64))),
    ("static-shapes", op("relu", (1, "is0")), op("relu", (1, 64))),
    ("dimension-limits", op("relu", (1, 1, 16385)), op("relu", (1, 1, 16384))),
    ("dimension-limits", op("relu", (1, 2, 1, 16385)), op("relu", (1, 2, 1, 16384))),
    ("last-axis-padding", op("relu", (1, 7)), op("relu", (1, 32))),
    ("singleton-last-axis", op("relu", (1, 1000, 1, 1)), op("relu", (1, 1, 1, 1000))),
    (
        "last-axis-layout",
        op("transpose", (1, 64, 1, 16), inp=[X], perm=[0, 3, 2, 1]),
        op("transpose", (1, 1, 16, 64), inp=[X], perm=[0, 2, 1, 3]),
    ),
    (
        "last-axis-layout",  # negative axes in the permutation
        op("transpose", (1, 16, 64, 1), inp=[X], perm=[0, 1, -1, -2]),
        op("transpose", (1, 1, 16, 64), inp=[X], perm=[0, -2, 1, -1]),
    ),
    (
        "last-axis-layout",
        op("reshape", (1, 16, 8, 8), inp=[X]),
        op("reshape", (16, 1, 1, 64), inp=[X]),
    ),
    ("softmax-axis", op("softmax", (1, 64, 1, 64), axis=-1), op("softmax", (1, 64, 1, 64), axis=1)),
    ("softmax-axis", op("softmax", (1, 64, 8, 8), axis=2), op("softmax", (1, 64, 8, 8), axis=-3)),
    (
        "conv-stride",
        op("conv", (1, 8, 4, 4), strides=[5, 5]),
        op("conv", (1, 8, 4, 4), strides=[6, 6]),
    ),
    (
        "conv-stride",
        op("conv", (1, 8, 4, 4), strides=[3, 4]),
        op("conv", (1, 8, 4, 4), strides=[2, 9]),
    ),
    (
        "pool-stride",
        op("max_pool", (1, 8, 4, 4), strides=[3, 3]),
        op("max_pool", (1, 8, 4, 4), strides=[4, 4]),
    ),
    (
        "large-kernel",
        op("conv", (1, 8, 4, 4), kernel_sizes=[9, 9]),
        op("conv", (1, 8, 4, 4), kernel_sizes=[7, 7]),
    ),
    (
        "large-dilation",
        op("conv", (1, 8, 4, 4), dilations=[5, 1]),
        op("conv", (1, 8, 4, 4), dilations=[3, 2]),
    ),
    ("reported-fallback", op("gather", (1, 8, 4, 4)), op("conv", (1, 8, 4, 4))),
    (
        "reported-fallback",
        op("conv", (1, 8, 4, 4), dilations=[4, 4]),
        op("conv", (1, 8, 4, 4), dilations=[2, 2]),
    ),
    (
        "reported-fallback",
        op("max_pool", (1, 8, 4, 4), kernel_sizes=[15, 15]),
        op("max_pool", (1, 8, 4, 4), kernel_sizes=[13, 13]),
    ),
    (
        "reported-fallback",
        op("avg_pool", (1, 8, 4, 4), strides=[3, 3]),
        op("avg_pool", (1, 8, 4, 4), strides=[4, 4]),
    ),
    ("reported-fallback", op("lstm", (1, 8, 64)), op("relu", (1, 8, 64))),
    (
        "reported-fallback",
        op("upsample_nearest_neighbor", (1, 8, 32, 32), inp=[val((1, 8, 8, 8))]),
        op("upsample_nearest_neighbor", (1, 8, 16, 16), inp=[val((1, 8, 8, 8))]),
    ),
    ("linear-layer", op("linear", (1, 64, 32), inp=[val((1, 64, 16))]), op("conv", (1, 32, 1, 64))),
]


@pytest.mark.parametrize(("rule_id", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_on_its_bad_op_and_not_on_the_good_one(
    rule_id: str, bad: Op, good: Op
) -> None:
    assert fires(rule_id, graph(bad)) == [bad.name]
    assert fires(rule_id, graph(good)) == []


def test_every_rule_has_a_case() -> None:
    assert {r.id for r in RULES} - {"negative-infinity"} == {c[0] for c in CASES}


def test_fp32_names_where_fp32_starts_and_the_cast_back() -> None:
    x = val((1, 64), name="x", kind="input")
    up = Op("up", "cast", (x,), (val((1, 64), "fp32", name="up_out"),), {"dtype": "fp32"})
    lit = val((), "fp32", name="one", kind="const")
    mul = Op("mul", "mul", (up.outputs[0], lit), (val((1, 64), "fp32", name="mul_out"),))
    down = Op("down", "cast", (mul.outputs[0],), (val((1, 64), name="down_out"),))
    out = Op("out", "relu", (down.outputs[0],), (val((1, 64), name="y"),), at_boundary=True)
    findings = rule("fp32")(graph(up, mul, down, out))
    assert [f.op.name for f in findings if f.op is not None] == ["up", "mul", "down"]
    assert "cast up" in findings[0].message
    assert "cast up" in findings[1].message and "scalar constant one" in findings[1].message
    assert "back to fp16" in findings[2].message
    # the casts at the program's edges are not fp32 ops
    edge = Op("in", "cast", (x,), (val((1, 64), "fp32", name="e"),), at_boundary=True)
    assert fires("fp32", graph(edge)) == []


def test_a_flexible_input_is_reported() -> None:
    flexible = val((1, "is0"), name="tokens", kind="input")
    assert fires("static-shapes", graph(inputs=[flexible])) == ["input"]


@pytest.mark.parametrize(
    ("minimum", "path", "expected"),
    [
        (-math.inf, ("add", "softmax"), True),
        (-1e9, ("select", "cast", "softmax"), True),  # -inf once rounded to fp16
        (-4e4, ("add", "softmax"), False),  # Apple's advice: -40000
        (-math.inf, ("add", "relu", "softmax"), False),  # relu is not on a mask's path
        (-math.inf, ("reduce_max",), False),
    ],
)
def test_negative_infinity_reaching_a_softmax(
    minimum: float, path: tuple[str, ...], expected: bool
) -> None:
    mask = val((1, 16), name="mask", kind="const", minimum=minimum)
    previous = val((1, 16), name="scores", kind="input")
    ops = []
    for i, kind in enumerate(path):
        inputs = (previous, mask) if i == 0 else (previous,)
        made = Op(f"op{i}", kind, inputs, (val((1, 16), name=f"v{i}"),), {"axis": -1})
        ops.append(made)
        previous = made.outputs[0]
    found = rule("negative-infinity")(graph(*ops))
    assert [f.op.op_type for f in found if f.op is not None] == (["softmax"] if expected else [])
    if expected:
        assert "mask" in found[0].message and " -> ".join(path) in found[0].message


# ----------------------------------------------------------------------------- bytes


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 70), min_size=0, max_size=5).map(tuple),
    dtype=st.sampled_from(sorted(ITEMSIZE)),
)
def test_value_bytes_follow_the_64_byte_rule(shape: tuple[int, ...], dtype: str) -> None:
    v = val(shape, dtype)
    assert v.padded_bytes == padded_by_hand(shape, ITEMSIZE[dtype])
    assert v.real_bytes == math.prod(shape) * ITEMSIZE[dtype]
    assert v.padded_bytes >= v.real_bytes


def test_unknown_shapes_and_types_count_zero_bytes() -> None:
    assert val((1, "is0")).nbytes == (0, 0)
    assert val((1, 0, 4)).nbytes == (0, 0)
    assert val((4,), "string").nbytes == (0, 0)


def test_worked_examples() -> None:
    seven = op("relu", (1, 32, 7, 7))  # Apple 2024: 7 fp16 values = 14 B, padded by 50
    assert seven.real_bytes == 32 * 7 * 14 and seven.wasted_bytes == 32 * 7 * 50
    logits = op("conv", (1, 1000, 1, 1))  # one value per row: 32x in fp16
    assert logits.overhead == 32
    assert op("relu", (1, 1000, 1, 1), dtype="int8").overhead == 64
    finding = rule("last-axis-padding")(graph(seven))[0]
    assert finding.bytes_lost == seven.wasted_bytes and "14 B in 64 B rows" in finding.message


# ----------------------------------------------------------------------------- report


def model_graph() -> Graph:
    """A stem, two stages, glue at the top level, a head; one op of unknown origin."""
    ops = [
        op("conv", (1, 8, 16, 16), name="c0", module="stem.conv"),
        op("conv", (1, 8, 16, 16), name="c1", module="stages.0.0.conv"),
        op("softmax", (1, 8, 1, 256), name="s1", module="stages.0.1.attn", axis=-1),
        op("conv", (1, 16, 8, 8), name="c2", module="stages.1.0.conv", strides=[5, 5]),
        op("reshape", (1, 16, 1, 64), name="r", module="", inp=[val((1, 16, 8, 8))]),
        op("conv", (1, 10, 1, 1), name="h", module="head"),
        op("relu", (1, 10, 1, 1), name="u", module=None),
    ]
    return graph(*ops)


def test_report_views_add_up() -> None:
    rep = analyse(model_graph())
    stages = rep.padding_by_stage()
    assert list(stages) == ["stem", "stages.0", "stages.1", TOP_LEVEL, "head", UNKNOWN_MODULE]
    assert sum(s.padded_bytes for s in stages.values()) == rep.activation_padded_bytes
    assert sum(s.real_bytes for s in stages.values()) == rep.activation_real_bytes
    assert sum(s.ops for s in stages.values()) == len(rep.ops) == 7
    by_type = rep.padding_by_op_type()
    assert by_type["conv"].ops == rep.op_histogram["conv"] == 4
    assert list(by_type.values())[0].wasted_bytes == max(g.wasted_bytes for g in by_type.values())
    assert rep.padding_overhead == rep.activation_padded_bytes / rep.activation_real_bytes
    assert rep.worst_padding(1)[0].wasted_bytes == max(o.wasted_bytes for o in rep.ops)
    assert rep.module_coverage == (6, 7)
    assert rep.layout_op_counts == {"transpose": 0, "reshape": 1}
    assert [o.name for o in rep.last_axis_layout_ops] == ["r"]


def test_severity_decides_ok_and_the_exit_status() -> None:
    costs_only = analyse(model_graph())
    assert {r.severity for r in costs_only.fired()} == {"cost"}
    assert costs_only.ok and costs_only.problems() == []
    assert not costs_only.failed("warning") and costs_only.failed("cost")
    fp32 = analyse(graph(op("relu", (1, 64), dtype="fp32")))
    assert not fp32.ok and fp32.failed("warning") and not fp32.failed("error")
    assert fp32.problems()[0].startswith("fp32 (warning): 1 finding")
    rank6 = analyse(graph(op("reshape", (1, 1, 1, 1, 1, 64))))
    assert rank6.failed("error") and [r.id for r in rank6.fired("error")] == ["rank"]
    assert [o.name for o in rank6.high_rank_ops] == ["op"]


def test_to_dict_is_json_and_lists_every_rule_with_its_sources() -> None:
    rep = analyse(model_graph())
    d = rep.to_dict(top=3)
    assert json.loads(json.dumps(d)) == d
    assert [r["id"] for r in d["rules"]] == [r.id for r in RULES]
    for entry in d["rules"]:
        assert entry["sources"] and all(s["url"].startswith("https://") for s in entry["sources"])
        assert entry["fired"] == len(entry["findings"]) == len(rep.findings[entry["id"]])
    assert len(d["worst_padding"]) == 3 and len(d["op_records"]) == 7
    assert d["module_paths"] == {"recorded": True, "ops_with_module": 6, "ops": 7}
    assert d["op_records"][1]["stage"] == "stages.0"


def test_text_fits_79_columns_and_names_every_rule_and_source() -> None:
    rep = analyse(model_graph())
    text = str(rep)
    assert max(len(line) for line in text.splitlines()) <= 79
    for r in RULES:
        assert f"  {r.id}: " in text
        for source in r.sources:
            marker = "(reported, not official)"
            assert (marker in str(source)) != source.official
    flat = " ".join(text.split())
    for r in RULES:
        assert " ".join(r.source_text.split()) in flat
    assert "stages.1.0.conv (conv)" in text and "prime factor(s) [5]" in text


def test_the_table_itself() -> None:
    assert len({r.id for r in RULES}) == len(RULES)
    assert all(r.severity in SEVERITIES for r in RULES)
    order = [SEVERITIES.index(r.severity) for r in RULES]
    assert order == sorted(order)  # worst first
    assert all(r.sources and r.title and r.advice for r in RULES)
    assert all(
        s.short and s.cite and s.url.startswith("https://") for r in RULES for s in r.sources
    )
    assert not rule("reported-fallback").sources[0].official
    with pytest.raises(ValueError, match=r"rule_id must be one of .*'rank'.*got 'nope'"):
        rule("nope")


def test_empty_program() -> None:
    rep = analyse(Graph(()))
    assert rep.ok and rep.ops == [] and rep.padding_overhead == 1.0 and rep.max_rank == 0
    assert "no ops to analyse" in str(rep)
    assert json.loads(json.dumps(rep.to_dict()))["ops"] == 0


def test_bad_arguments() -> None:
    rep = analyse(model_graph())
    with pytest.raises(TypeError, match="graph must be"):
        analyse("program")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rules must hold Rule"):
        analyse(model_graph(), rules=["rank"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="fail_on must be one of .*got 'fatal'"):
        rep.failed("fatal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        rep.worst_padding(0)
    with pytest.raises(TypeError, match="key must be a callable"):
        rep.padding_by_stage("stage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule_id must be one of"):
        rep.rule_findings("speed")
    assert isinstance(rep, Report)


# ----------------------------------------------------------------------------- module paths


@pytest.mark.parametrize(
    ("path", "stage"),
    [
        ("stages.2.0.mbconv.norm", "stages.2"),
        ("encoder.layer.11.attention.q_lin", "encoder.layer.11"),
        ("blocks.3", "blocks.3"),
        ("stem.conv0", "stem"),
        ("head", "head"),
        ("", TOP_LEVEL),
        (None, UNKNOWN_MODULE),
    ],
)
def test_stage_of(path: str | None, stage: str) -> None:
    assert stage_of(path) == stage


def test_module_paths_round_trip_and_name_matching() -> None:
    paths = ModulePaths(
        ops={"logits": "head"},
        nodes={"conv2d_5": "stages.0.0.conv", "split": "stages.2.0.attention", "mul_22": "n"},
        types={"head": "torch.nn.modules.conv.Conv2d"},
    )
    again = ModulePaths.from_json(paths.to_json())
    assert again == paths
    assert again.module_of("logits") == "head"
    assert again.module_of("conv2d_5_cast_fp16") == "stages.0.0.conv"
    assert again.module_of("split_cast_fp16_0") == "stages.2.0.attention"
    assert again.module_of("mul_22_1_cast_fp16") == "n"
    assert again.module_of("transpose_3") is None
    assert again.type_of("head") == "torch.nn.modules.conv.Conv2d" and again.type_of(None) is None
    assert candidate_node_names("conv2d_5_cast_fp16") == [
        "conv2d_5_cast_fp16",
        "conv2d_5",
        "conv2d",
    ]
    for bad in ("[1]", "{", '{"format": 1, "ops": {"a": 1}}', '{"format": 99}'):
        with pytest.raises(ValueError, match="module paths"):
            ModulePaths.from_json(bad)


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (512, 1536, 3 * 2**20, 5 * 2**30)] == [
        "512 B",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]
