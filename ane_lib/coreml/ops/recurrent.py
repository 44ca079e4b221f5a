"""Recurrent ops (coremltools ``recurrent``): ``rnn``, ``gru``, ``lstm`` over a sequence.

Inputs are ``x: (S, B, I)`` (sequence first), states ``(B, H)``; weights are ``(G H, I)`` and
``(G H, H)`` with the gates stacked in the op's order (``lstm``: input, forget, output, cell;
``gru``: reset, output, update). The first output holds every step's hidden state when
``output_sequence``, else only the last (``(1, B, H)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ane_lib.coreml.ops._common import activation_by_name
from ane_lib.coreml.ops._registry import OpArgs, register

Act = Callable[[torch.Tensor], torch.Tensor]


def _activation(a: OpArgs, key: str, default: str) -> Act:
    name = a.str(key, default)
    fn = activation_by_name(name)
    if fn is None:
        raise a.invalid(f"unknown activation {name!r} for {key}")
    return fn


def _zeros_or(a: OpArgs, key: str, n: int, like: torch.Tensor) -> torch.Tensor:
    return a.get(key).to(like.dtype) if a.has(key) else torch.zeros(n, dtype=like.dtype)


def _steps(x: torch.Tensor, reverse: bool) -> list[int]:
    return list(range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]))


def _sequence(outputs: list[torch.Tensor], a: OpArgs, reverse: bool) -> torch.Tensor:
    """(S, B, H) in the input's time order, or the last computed step as (1, B, H)."""
    if a.bool("output_sequence", False):
        return torch.stack(outputs[::-1] if reverse else outputs)
    return outputs[-1].unsqueeze(0)


@register("rnn")
def _rnn(a: OpArgs) -> tuple[torch.Tensor, torch.Tensor]:
    # h_t = activation(W_ih x_t + W_hh h_{t-1} + bias)
    x, h = a.get("x"), a.get("initial_h")
    w_ih, w_hh = a.get("weight_ih").to(x.dtype), a.get("weight_hh").to(x.dtype)
    bias = _zeros_or(a, "bias", w_hh.shape[0], x)
    act = _activation(a, "activation", "tanh")
    reverse = a.str("direction", "forward") == "reverse"
    outputs = []
    for t in _steps(x, reverse):
        h = act(x[t] @ w_ih.T + h @ w_hh.T + bias)
        outputs.append(h)
    return _sequence(outputs, a, reverse), h


@register("gru")
def _gru(a: OpArgs) -> tuple[torch.Tensor, torch.Tensor]:
    # r = ract(W_ir x + W_hr h + b_r), z = ract(W_iz x + W_hz h + b_z),
    # o = act(W_io x + W_ho (r * h) + b_o)      (reset_after: act(W_io x + r * (W_ho h + b_ho)))
    # h = (1 - z) * o + z * h; biases: bias (hidden) + input_bias (iOS18), gates r, o, z
    x, h = a.get("x"), a.get("initial_h")
    w_ih, w_hh = a.get("weight_ih").to(x.dtype), a.get("weight_hh").to(x.dtype)
    size = w_hh.shape[1]
    bias = _zeros_or(a, "bias", 3 * size, x)
    input_bias = _zeros_or(a, "input_bias", 3 * size, x)
    ract = _activation(a, "recurrent_activation", "sigmoid")
    act = _activation(a, "activation", "tanh")
    reset_after = a.bool("reset_after", False)
    reverse = a.str("direction", "forward") == "reverse"
    wi_r, wi_o, wi_z = w_ih.split(size)
    wh_r, wh_o, wh_z = w_hh.split(size)
    bh_r, bh_o, bh_z = bias.split(size)
    bi_r, bi_o, bi_z = input_bias.split(size)
    outputs = []
    for t in _steps(x, reverse):
        xt = x[t]
        r = ract(xt @ wi_r.T + bi_r + h @ wh_r.T + bh_r)
        z = ract(xt @ wi_z.T + bi_z + h @ wh_z.T + bh_z)
        if reset_after:
            o = act(xt @ wi_o.T + bi_o + r * (h @ wh_o.T + bh_o))
        else:
            o = act(xt @ wi_o.T + bi_o + (r * h) @ wh_o.T + bh_o)
        h = (1 - z) * o + z * h
        outputs.append(h)
    return _sequence(outputs, a, reverse), h


def _lstm_direction(
    a: OpArgs,
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    suffix: str,
    reverse: bool,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    # i = ract(W_i x + R_i h + b_i + p_i c), f = ract(... + p_f c), g = cact(W_g x + R_g h + b_g)
    # c' = f c + i g (clipped to [-clip, clip]), o = ract(W_o x + R_o h + b_o + p_o c'),
    # h' = o act(c'); gates stacked i, f, o, g; peepholes i, f, o
    w_ih = a.get("weight_ih" + suffix).to(x.dtype)
    w_hh = a.get("weight_hh" + suffix).to(x.dtype)
    size = w_hh.shape[1]
    bias = _zeros_or(a, "bias" + suffix, 4 * size, x)
    peep = _zeros_or(a, "peephole" + suffix, 3 * size, x)
    ract = _activation(a, "recurrent_activation", "sigmoid")
    cact = _activation(a, "cell_activation", "tanh")
    act = _activation(a, "activation", "tanh")
    clip = a.float("clip", None)
    p_i, p_f, p_o = peep.split(size)
    outputs = []
    for t in _steps(x, reverse):
        gates = x[t] @ w_ih.T + h @ w_hh.T + bias
        g_i, g_f, g_o, g_g = gates.split(size, dim=-1)
        i = ract(g_i + p_i * c)
        f = ract(g_f + p_f * c)
        c = f * c + i * cact(g_g)
        if clip is not None:
            c = c.clamp(-clip, clip)
        o = ract(g_o + p_o * c)
        h = o * act(c)
        outputs.append(h)
    return outputs, h, c


@register("lstm")
def _lstm(a: OpArgs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # states: (B, DIRECTIONS * H), the forward direction first
    x = a.get("x")
    h0, c0 = a.get("initial_h"), a.get("initial_c")
    direction = a.str("direction", "forward")
    if direction != "bidirectional":
        reverse = direction == "reverse"
        outs, h, c = _lstm_direction(a, x, h0, c0, "", reverse)
        return _sequence(outs, a, reverse), h, c
    size = h0.shape[-1] // 2
    outs_f, h_f, c_f = _lstm_direction(a, x, h0[:, :size], c0[:, :size], "", False)
    outs_b, h_b, c_b = _lstm_direction(a, x, h0[:, size:], c0[:, size:], "_back", True)
    if a.bool("output_sequence", False):
        seq = torch.cat([torch.stack(outs_f), torch.stack(outs_b[::-1])], dim=-1)
    else:
        # the last step: the forward direction's last, the backward direction's first
        seq = torch.cat([outs_f[-1], outs_b[-1]], dim=-1).unsqueeze(0)
    return seq, torch.cat([h_f, h_b], -1), torch.cat([c_f, c_b], -1)
