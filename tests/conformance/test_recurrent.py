"""Conformance of the recurrent ops (coremltools ``recurrent``): ``rnn``, ``gru``, ``lstm``.

References from the definitions' equations (x: (S, B, I) sequence first, states (B, H), gates
stacked as the definitions order them: lstm input, forget, output, cell; gru reset, output,
update), cross-checked against torch.nn.LSTM / GRU for the standard activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from conformance._harness import IOS17, IOS18, assert_fp32, build, check, mb, run_built

_R = np.random.default_rng(71)
S, B, I, H = 4, 2, 3, 5

ACT = {
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0),
    "linear": lambda v: v,
    "scaled_tanh": np.tanh,  # alpha = beta = 1
    "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
}


def _steps(reverse: bool) -> range:
    return range(S - 1, -1, -1) if reverse else range(S)


def _sequence(outs: list[Any], reverse: bool, full: bool) -> Any:
    if full:
        return np.stack(outs[::-1] if reverse else outs)
    return outs[-1][None]


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_rnn(direction: str, full: bool, activation: str) -> None:
    x, h0 = _R.normal(size=(S, B, I)).astype(np.float32), _R.normal(size=(B, H)).astype(np.float32)
    params = {
        "weight_ih": _R.normal(size=(H, I)) * 0.5,
        "weight_hh": _R.normal(size=(H, H)) * 0.5,
        "bias": _R.normal(size=H),
    }

    def reference(x: Any, h: Any, weight_ih: Any, weight_hh: Any, bias: Any) -> Any:
        outs = []
        for t in _steps(direction == "reverse"):
            h = ACT[activation](x[t] @ weight_ih.T + h @ weight_hh.T + bias)
            outs.append(h)
        return _sequence(outs, direction == "reverse", full), h

    check(
        "rnn",
        lambda x, h, **p: mb.rnn(
            x=x, initial_h=h, direction=direction, output_sequence=full, activation=activation, **p
        ),
        {"x": x, "h": h0},
        reference,
        params=params,
        opset=IOS17,
        fp16_extra=1e-3,
    )


def _gru(
    x: Any,
    h: Any,
    wi: Any,
    wh: Any,
    b: Any,
    bi: Any,
    reverse: bool,
    full: bool,
    ract: str,
    act: str,
    reset_after: bool,
) -> Any:
    wir, wio, wiz = np.split(wi, 3)
    whr, who, whz = np.split(wh, 3)
    br, bo, bz = np.split(b, 3)
    bir, bio, biz = np.split(bi, 3)
    outs = []
    for t in _steps(reverse):
        r = ACT[ract](x[t] @ wir.T + bir + h @ whr.T + br)
        z = ACT[ract](x[t] @ wiz.T + biz + h @ whz.T + bz)
        if reset_after:
            o = ACT[act](x[t] @ wio.T + bio + r * (h @ who.T + bo))
        else:
            o = ACT[act](x[t] @ wio.T + bio + (r * h) @ who.T + bo)
        h = (1 - z) * o + z * h
        outs.append(h)
    return _sequence(outs, reverse, full), h


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(("act", "ract"), [("tanh", "sigmoid"), ("sigmoid", "tanh")])
def test_gru(direction: str, full: bool, act: str, ract: str) -> None:
    x, h0 = _R.normal(size=(S, B, I)).astype(np.float32), _R.normal(size=(B, H)).astype(np.float32)
    params = {
        "weight_ih": _R.normal(size=(3 * H, I)) * 0.5,
        "weight_hh": _R.normal(size=(3 * H, H)) * 0.5,
        "bias": _R.normal(size=3 * H),
    }
    check(
        "gru",
        lambda x, h, **p: mb.gru(
            x=x,
            initial_h=h,
            direction=direction,
            output_sequence=full,
            activation=act,
            recurrent_activation=ract,
            **p,
        ),
        {"x": x, "h": h0},
        lambda x, h, weight_ih, weight_hh, bias: _gru(
            x,
            h,
            weight_ih,
            weight_hh,
            bias,
            np.zeros(3 * H),
            direction == "reverse",
            full,
            ract,
            act,
            False,
        ),
        params=params,
        opset=IOS17,
        fp16_extra=1e-3,
    )


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_ios18_input_bias_and_reset_after(reset_after: bool) -> None:
    x, h0 = _R.normal(size=(S, B, I)).astype(np.float32), _R.normal(size=(B, H)).astype(np.float32)
    params = {
        "weight_ih": _R.normal(size=(3 * H, I)) * 0.5,
        "weight_hh": _R.normal(size=(3 * H, H)) * 0.5,
        "bias": _R.normal(size=3 * H),
        "input_bias": _R.normal(size=3 * H),
    }
    check(
        "gru",
        lambda x, h, **p: mb.gru(
            x=x, initial_h=h, output_sequence=True, reset_after=reset_after, **p
        ),
        {"x": x, "h": h0},
        lambda x, h, weight_ih, weight_hh, bias, input_bias: _gru(
            x,
            h,
            weight_ih,
            weight_hh,
            bias,
            input_bias,
            False,
            True,
            "sigmoid",
            "tanh",
            reset_after,
        ),
        params=params,
        opset=IOS18,
        fp16_extra=1e-3,
    )


def test_gru_reset_after_is_torch_gru() -> None:
    # torch.nn.GRU applies the reset gate after the hidden matmul: reset_after=True, with its
    # gates reordered from (r, z, n) to the definition's (r, o, z)
    torch.manual_seed(0)
    gru = torch.nn.GRU(I, H)
    x, h0 = torch.randn(S, B, I), torch.randn(1, B, H)
    with torch.no_grad():
        ref, _ = gru(x, h0)

    def order(w: torch.Tensor) -> np.ndarray:
        r, z, n = (
            w.detach().numpy().reshape(3, H, -1)
            if w.ndim == 2
            else w.detach().numpy().reshape(3, H)
        )
        return np.concatenate([r, n, z]).astype(np.float32)

    program = build(
        lambda x, h: mb.gru(
            x=x,
            initial_h=h,
            weight_ih=order(gru.weight_ih_l0),
            weight_hh=order(gru.weight_hh_l0),
            input_bias=order(gru.bias_ih_l0),
            bias=order(gru.bias_hh_l0),
            reset_after=True,
            output_sequence=True,
        ),
        {"x": x.numpy(), "h": h0[0].numpy()},
        IOS18,
    )
    seq, _ = run_built(program, {"x": x.numpy(), "h": h0[0].numpy()})
    assert_fp32(seq, ref.numpy(), "gru vs torch.nn.GRU")


def _lstm_direction(
    x: Any, h: Any, c: Any, wi: Any, wh: Any, b: Any, p: Any, reverse: bool, acts: Any, clip: Any
) -> Any:
    ract, cact, act = (ACT[a] for a in acts)
    pi, pf, po = np.split(p, 3)
    outs = []
    for t in _steps(reverse):
        gi, gf, go, gg = np.split(x[t] @ wi.T + h @ wh.T + b, 4, axis=-1)
        i = ract(gi + pi * c)
        f = ract(gf + pf * c)
        c = f * c + i * cact(gg)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        o = ract(go + po * c)
        h = o * act(c)
        outs.append(h)
    return outs, h, c


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(("peephole", "clip"), [(False, None), (True, None), (True, 0.5)])
@pytest.mark.parametrize("acts", [("sigmoid", "tanh", "tanh"), ("hard_sigmoid", "relu", "linear")])
def test_lstm(direction: str, full: bool, peephole: bool, clip: Any, acts: Any) -> None:
    dirs = 2 if direction == "bidirectional" else 1
    x = _R.normal(size=(S, B, I)).astype(np.float32)
    h0, c0 = (_R.normal(size=(B, dirs * H)).astype(np.float32) for _ in range(2))
    params: dict[str, Any] = {
        "weight_ih": _R.normal(size=(4 * H, I)) * 0.5,
        "weight_hh": _R.normal(size=(4 * H, H)) * 0.5,
        "bias": _R.normal(size=4 * H),
    }
    if peephole:
        params["peephole"] = _R.normal(size=3 * H)
    if clip is not None:
        params["clip"] = clip
    if dirs == 2:
        params |= {
            "weight_ih_back": _R.normal(size=(4 * H, I)) * 0.5,
            "weight_hh_back": _R.normal(size=(4 * H, H)) * 0.5,
            "bias_back": _R.normal(size=4 * H),
        }
        if peephole:
            params["peephole_back"] = _R.normal(size=3 * H)

    def reference(x: Any, h: Any, c: Any, **p: Any) -> Any:
        zero = np.zeros(3 * H)
        if dirs == 1:
            outs, hn, cn = _lstm_direction(
                x,
                h,
                c,
                p["weight_ih"],
                p["weight_hh"],
                p["bias"],
                p.get("peephole", zero),
                direction == "reverse",
                acts,
                p.get("clip"),
            )
            return _sequence(outs, direction == "reverse", full), hn, cn
        of, hf, cf = _lstm_direction(
            x,
            h[:, :H],
            c[:, :H],
            p["weight_ih"],
            p["weight_hh"],
            p["bias"],
            p.get("peephole", zero),
            False,
            acts,
            p.get("clip"),
        )
        ob, hb, cb = _lstm_direction(
            x,
            h[:, H:],
            c[:, H:],
            p["weight_ih_back"],
            p["weight_hh_back"],
            p["bias_back"],
            p.get("peephole_back", zero),
            True,
            acts,
            p.get("clip"),
        )
        seq = (
            np.concatenate([np.stack(of), np.stack(ob[::-1])], -1)
            if full
            else np.concatenate([of[-1], ob[-1]], -1)[None]
        )
        return seq, np.concatenate([hf, hb], -1), np.concatenate([cf, cb], -1)

    ract, cact, act = acts
    check(
        "lstm",
        lambda x, h, c, **p: mb.lstm(
            x=x,
            initial_h=h,
            initial_c=c,
            direction=direction,
            output_sequence=full,
            recurrent_activation=ract,
            cell_activation=cact,
            activation=act,
            **p,
        ),
        {"x": x, "h": h0, "c": c0},
        reference,
        params=params,
        opset=IOS17,
        fp16_extra=1e-3,
        what=f"{direction} full={full} peephole={peephole} clip={clip} {acts}",
    )


def test_lstm_is_torch_lstm() -> None:
    # torch.nn.LSTM with its gates reordered from (i, f, g, o) to the definition's (i, f, o, g)
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(I, H)
    x, h0, c0 = torch.randn(S, B, I), torch.randn(1, B, H), torch.randn(1, B, H)
    with torch.no_grad():
        ref, (hn, cn) = lstm(x, (h0, c0))

    def order(w: torch.Tensor) -> np.ndarray:
        i, f, g, o = np.split(w.detach().numpy(), 4)
        return np.concatenate([i, f, o, g]).astype(np.float32)

    bias = order(lstm.bias_ih_l0 + lstm.bias_hh_l0)
    feed = {"x": x.numpy(), "h": h0[0].numpy(), "c": c0[0].numpy()}
    program = build(
        lambda x, h, c: mb.lstm(
            x=x,
            initial_h=h,
            initial_c=c,
            weight_ih=order(lstm.weight_ih_l0),
            weight_hh=order(lstm.weight_hh_l0),
            bias=bias,
            output_sequence=True,
        ),
        feed,
        IOS17,
    )
    seq, h, c = run_built(program, feed)
    assert_fp32(seq, ref.numpy(), "lstm vs torch.nn.LSTM")
    assert_fp32(h, hn[0].numpy(), "lstm h")
    assert_fp32(c, cn[0].numpy(), "lstm c")


def test_every_recurrent_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "recurrent"} == {"rnn", "gru", "lstm"}
