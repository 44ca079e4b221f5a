"""Re-parameterisation: train with several branches or with batch norms, run with one conv.

- :class:`RepConv2d`: a RepVGG / MobileOne-style block. At training time it sums ``k x k``
  conv + BN branches, a ``1x1`` conv + BN branch and an identity BN; its
  :meth:`RepConv2d.reparameterize` returns the one ``k x k`` conv that computes the same.
- :func:`reparameterize`: a copy of any model, in eval mode, with every foldable pattern folded:
  each re-parameterisable block replaced by its conv, each batch norm folded into the conv or
  linear layer it feeds or is fed by, where that is exact. Equal outputs in eval mode.

How the patterns are found. A block is re-parameterisable if it has a ``reparameterize()``
method taking no arguments (this module's blocks, Apple's MobileOne and FastViT blocks): one
that returns a module is replaced by it, one that returns None changed itself. Batch norms are
folded where the data flow is known: next to a conv or linear layer inside an ``nn.Sequential``;
and, given an ``example_input``, anywhere the graph captured by ``torch.export`` shows a conv (or
linear layer) feeding only a batch norm, or a batch norm feeding only a conv that pads nothing,
possibly through reshapes that keep the batch and channel axes (the flat ``(B, C, 1, S)``
layout). MOAT's MBConv pre-norm (BN -> 1x1 conv) is of the second kind.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ane_lib._checks import check_positive_int
from ane_lib.functional.merge import batchnorm_scale_shift, fold_scale_shift_after
from ane_lib.nn.merge import _is_layer, fold_batchnorm

__all__ = ["RepConv2d", "reparameterize"]


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    groups: int,
    eps: float,
    momentum: float,
) -> nn.Sequential:
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum))


def _scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    return batchnorm_scale_shift(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


class RepConv2d(nn.Module):
    """A re-parameterisable conv block in the style of RepVGG and MobileOne.

    ``x: (B, C_in, H, W) -> (B, C_out, H', W')`` with ``H' = floor((H - 1) / stride) + 1``:

        y = sum_i BN_i(conv_kxk_i(x)) + BN_s(conv_1x1(x)) + BN_id(x)

    Args:
        in_channels, out_channels: ``C_in``, ``C_out``.
        kernel_size: ``k``, odd; the k x k convs pad ``k // 2`` so that every branch is centred
            on the same input pixel.
        stride, groups: of every conv branch.
        num_branches: number of ``k x k`` conv + BN branches (MobileOne uses several).
        scale_branch: add the ``1x1`` conv + BN branch (only when ``k > 1``).
        identity: add the identity BN branch; default: when ``C_in == C_out`` and stride 1, the
            only case where it exists.
        eps, momentum: of the batch norms.

    The block holds no activation: put one after it (RepVGG and MobileOne apply ReLU to the
    sum). :meth:`reparameterize` returns the single equivalent ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        num_branches: int = 1,
        scale_branch: bool = True,
        identity: bool | None = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride)
        self.groups = check_positive_int("groups", groups)
        check_positive_int("num_branches", num_branches)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so that every branch is centred, got {kernel_size}"
            )
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        can_identity = in_channels == out_channels and stride == 1
        if identity and not can_identity:
            raise ValueError(
                "identity=True needs in_channels == out_channels and stride 1, got "
                f"{in_channels} -> {out_channels} with stride {stride}"
            )

        def conv_bn(k: int) -> nn.Sequential:
            return _conv_bn(in_channels, out_channels, k, stride, groups, eps, momentum)

        self.branches = nn.ModuleList(conv_bn(kernel_size) for _ in range(num_branches))
        self.scale: nn.Sequential | None = conv_bn(1) if scale_branch and kernel_size > 1 else None
        use_identity = can_identity if identity is None else identity
        self.identity: nn.BatchNorm2d | None = (
            nn.BatchNorm2d(in_channels, eps=eps, momentum=momentum) if use_identity else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``."""
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        if self.scale is not None:
            out = out + self.scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return out

    def _branch_kernels(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(k x k kernel, bias) of every branch with its batch norm folded, in float64."""
        k, centre = self.kernel_size, self.kernel_size // 2
        conv_branches = [*self.branches, *([self.scale] if self.scale is not None else [])]
        for branch in conv_branches:
            conv, bn = branch[0], branch[1]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            scale, shift = _scale_shift(bn)
            weight = conv.weight.detach().to(torch.float64)
            # a 1x1 kernel is the centre of a k x k one
            weight = nn.functional.pad(weight, [(k - weight.shape[-1]) // 2] * 4)
            yield fold_scale_shift_after(weight, None, scale, shift)
        if self.identity is not None:
            bn = self.identity
            per_group = self.in_channels // self.groups
            eye = torch.zeros(
                self.in_channels, per_group, k, k, dtype=torch.float64, device=bn.weight.device
            )
            channel = torch.arange(self.in_channels)
            eye[channel, channel % per_group, centre, centre] = 1.0  # a centred 1 per channel
            scale, shift = _scale_shift(bn)
            yield fold_scale_shift_after(eye, None, scale, shift)

    def reparameterize(self) -> nn.Conv2d:
        """The one ``nn.Conv2d`` (k x k, same stride and groups, padding ``k // 2``, with a bias)
        equal to the block in eval mode. The block itself is left unchanged.

        Raises ValueError if the block is in training mode (its batch norms would use batch
        statistics, which no fixed conv reproduces).
        """
        if self.training:
            raise ValueError(
                "RepConv2d.reparameterize() needs the block in eval mode (in training mode its "
                "batch norms normalise with batch statistics): call .eval() first"
            )
        kernels = list(self._branch_kernels())
        weight = torch.stack([w for w, _ in kernels]).sum(dim=0)
        bias = torch.stack([b for _, b in kernels]).sum(dim=0)
        like = next(self.parameters())
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.kernel_size // 2,
            groups=self.groups,
            bias=True,
            device=like.device,
            dtype=like.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight.to(like.dtype))
            assert conv.bias is not None
            conv.bias.copy_(bias.to(like.dtype))
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, branches={len(self.branches)}, "
            f"scale={self.scale is not None}, identity={self.identity is not None}"
        )


# --------------------------------------------------------------------------- reparameterize


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _is_rep_block(module: nn.Module) -> bool:
    """Has a ``reparameterize()`` method that can be called without arguments."""
    method = getattr(module, "reparameterize", None)
    if not callable(method):
        return False
    try:
        inspect.signature(method).bind()
    except (TypeError, ValueError):
        return False
    return True


def _replace_rep_blocks(root: nn.Module) -> nn.Module:
    """Call every re-parameterisable block's ``reparameterize()``, outermost first."""
    if _is_rep_block(root):
        result = root.reparameterize()  # type: ignore[operator]
        return result if isinstance(result, nn.Module) else root
    done: list[str] = []
    for path, module in list(root.named_modules()):
        if not path or any(path.startswith(p + ".") for p in done):
            continue
        if _is_rep_block(module):
            result = module.reparameterize()
            if isinstance(result, nn.Module):
                _set_submodule(root, path, result)
            done.append(path)
    return root


def _choose(root: nn.Module, links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keep links that use each batch norm once and each layer at most once per side.

    Links with the batch norm second (always exact) are tried first.
    """

    def bn_second(link: tuple[str, str]) -> bool:
        return isinstance(root.get_submodule(link[1]), _BatchNorm)

    chosen: list[tuple[str, str]] = []
    used: set[tuple[str, str]] = set()
    for first, second in sorted(links, key=lambda link: not bn_second(link)):
        after = bn_second((first, second))
        bn, layer = (second, first) if after else (first, second)
        keys = {(bn, "bn"), (layer, "after" if after else "before")}
        if not keys & used:
            chosen.append((first, second))
            used |= keys
    return chosen


def _fold_links(root: nn.Module, links: list[tuple[str, str]]) -> int:
    """Fold each (first, second) link of module paths, one a batch norm and one a layer; the
    batch norm becomes ``nn.Identity``. Links whose fold is not exact are skipped."""
    folded = 0
    for first, second in links:
        a, b = root.get_submodule(first), root.get_submodule(second)
        try:
            new = fold_batchnorm(a, b)
        except (TypeError, ValueError):
            continue
        bn_path, layer_path = (second, first) if isinstance(b, _BatchNorm) else (first, second)
        _set_submodule(root, layer_path, new)
        _set_submodule(root, bn_path, nn.Identity())
        folded += 1
    return folded


def _is_link(first: object, second: object) -> bool:
    return (_is_layer(first) and isinstance(second, _BatchNorm)) or (
        isinstance(first, _BatchNorm) and _is_layer(second)
    )


def _sequential_links(root: nn.Module) -> list[tuple[str, str]]:
    """Neighbours (layer, BN) and (BN, layer) inside plain ``nn.Sequential`` containers."""
    links: list[tuple[str, str]] = []
    for path, seq in root.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        prefix = f"{path}." if path else ""
        names = list(seq._modules)
        for left, right in zip(names, names[1:], strict=False):
            if _is_link(seq._modules[left], seq._modules[right]):
                links.append((prefix + left, prefix + right))
    return _choose(root, links)


_CONV_OPS = ("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default")
_LINEAR_OPS = ("aten.linear.default",)
_BN_OPS = ("aten.batch_norm.default",)
_RESHAPE_OPS = (
    "aten.reshape.default",
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.flatten.using_ints",
    "aten.unflatten.int",
)


def _shape(node: Any) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _capture(root: nn.Module, example: tuple[torch.Tensor, ...]) -> Any:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(root, example)
    except Exception as err:
        raise RuntimeError(
            "reparameterize could not capture the model with torch.export "
            f"({type(err).__name__}: {err}); pass example_input=None to fold only the patterns "
            "visible from the module structure"
        ) from err


def _graph_links(root: nn.Module, example: tuple[torch.Tensor, ...]) -> list[tuple[str, str]]:
    """(first, second) module paths of conv/linear -> BN and BN -> conv/linear links in the
    graph ``torch.export`` captures: each module called once, its parameters read by that call
    only, the first one's output read only by the second (through channel-keeping reshapes)."""
    program = _capture(root, example)
    graph = program.graph
    wanted = _CONV_OPS + _LINEAR_OPS + _BN_OPS
    calls: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and str(node.target) in wanted and stack:
            path = list(stack.values())[-1][0]
            counts[path] += 1
            calls[path] = node
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    signature = program.graph_signature
    owners = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    instances = Counter(id(m) for _, m in root.named_modules(remove_duplicate=False))
    by_node: dict[Any, str] = {}
    for path, node in calls.items():
        # called once, registered once, and its parameters read by this call only
        if counts[path] != 1 or instances[id(root.get_submodule(path))] != 1:
            continue
        own = [p for p, target in owners.items() if target.rpartition(".")[0] == path]
        if all(set(placeholders[p].users) <= {node} for p in own if p in placeholders):
            by_node[node] = path

    def reader_of(node: Any, keep_channels: bool) -> Any:
        """The one node that reads ``node``, through reshapes keeping (B, C) if allowed."""
        while len(node.users) == 1:
            (user,) = node.users
            if user in by_node and user.args and user.args[0] is node:
                return user
            before, after = _shape(node), _shape(user)
            if not (keep_channels and str(user.target) in _RESHAPE_OPS):
                return None
            if before is None or after is None or before[:2] != after[:2]:
                return None
            node = user
        return None

    links: list[tuple[str, str]] = []
    for node, path in by_node.items():
        linear = str(node.target) in _LINEAR_OPS
        # a linear layer mixes the last axis: its link to a batch norm needs (N, F) tensors
        if linear and len(_shape(node) or ()) != 2:
            continue
        reader = reader_of(node, keep_channels=not linear)
        if reader is None or (str(node.target) in _BN_OPS) == (str(reader.target) in _BN_OPS):
            continue
        if str(reader.target) in _LINEAR_OPS and len(_shape(reader) or ()) != 2:
            continue
        links.append((path, by_node[reader]))
    return _choose(root, links)


def reparameterize(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable pattern folded; same outputs.

    1. Every re-parameterisable block (a ``reparameterize()`` method without arguments, such as
       :class:`RepConv2d` or MobileOne's blocks) is replaced by the module it returns, or left
       as it changed itself when it returns None.
    2. Batch norms are folded into a neighbouring conv or linear layer where the fold is exact
       (:func:`ane_lib.nn.fold_batchnorm`) and the data flow is known: neighbours in an
       ``nn.Sequential``, and, when ``example_input`` is given, every link the graph of
       ``torch.export.export(model, example_input)`` shows (e.g. MOAT's pre-norm -> 1x1 conv,
       or a conv -> reshape to ``(B, C, 1, S)`` -> batch norm). A folded batch norm becomes
       ``nn.Identity``.

    The model itself is not modified. The copy's outputs equal the model's outputs in eval mode
    (the running statistics are baked in: training the copy trains a different model).
    Raises TypeError for a non-module or a bad ``example_input``, and RuntimeError if
    ``torch.export`` cannot capture the model with ``example_input``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    example: tuple[torch.Tensor, ...] | None = None
    if example_input is not None:
        example = (example_input,) if isinstance(example_input, torch.Tensor) else example_input
        if not isinstance(example, tuple) or not all(isinstance(t, torch.Tensor) for t in example):
            raise TypeError(
                "example_input must be a tensor or a tuple of tensors, got "
                f"{type(example_input).__name__}"
            )
    result = _replace_rep_blocks(copy.deepcopy(model).eval()).eval()
    _fold_links(result, _sequential_links(result))
    if example is not None:
        _fold_links(result, _graph_links(result, example))
    return result
