"""One call builds a MOAT or a DeiT in either form; one call converts a model to the other form.

    model = create_model("tiny_moat_1", form="standard", pe="rpe", attention="local",
                         window=8, image_size=256, num_classes=1000)
    ane = to_ane(model)              # same weights, same outputs, the Neural Engine's layout
    back = to_standard(ane)

Every model keeps its :class:`~ane_lib.models.config.MOATConfig` or
:class:`~ane_lib.models.config.DeiTConfig` as ``model.config`` and its form as ``model.form``, so
the conversion rebuilds the twin from the config and loads the state dict: each module of the
target form accepts the other form's layout (fused vs split ``qkv``, Linear vs 1x1-conv weights,
``(1, S, C)`` vs ``(1, C, 1, S)`` embeddings), so ``load_state_dict`` across forms works too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ane_lib._checks import check_choice
from ane_lib.models.config import MOAT_VARIANTS, DeiTConfig, MOATConfig
from ane_lib.models.deit import DeiT, DeiTANE
from ane_lib.models.moat import MOAT, MOATANE

__all__ = [
    "FORMS",
    "Form",
    "create_config",
    "build_model",
    "create_model",
    "list_models",
    "to_ane",
    "to_standard",
    "count_parameters",
]

Form = Literal["standard", "ane"]
FORMS: tuple[str, ...] = ("standard", "ane")

_DEIT_NAMES: tuple[str, ...] = ("deit_tiny",)
_CLASSES: dict[tuple[type, str], type[nn.Module]] = {
    (MOATConfig, "standard"): MOAT,
    (MOATConfig, "ane"): MOATANE,
    (DeiTConfig, "standard"): DeiT,
    (DeiTConfig, "ane"): DeiTANE,
}


def list_models() -> list[str]:
    """The model names :func:`create_model` accepts, sorted."""
    return sorted([*MOAT_VARIANTS, *_DEIT_NAMES])


def create_config(
    name: str,
    *,
    pe: str | None = None,
    attention: str | None = None,
    window: int | Sequence[int] | None = None,
    image_size: int | Sequence[int] = 224,
    num_classes: int = 1000,
    head_size: int | None = None,
    num_heads: int | None = None,
) -> MOATConfig | DeiTConfig:
    """The validated config :func:`create_model` builds from (same options, no weights)."""
    check_choice("name", name, list_models())
    if name in MOAT_VARIANTS:
        if num_heads is not None:
            raise ValueError(
                f"num_heads={num_heads!r} is a DeiT option; MOAT sets its heads by head_size "
                "(heads = width / head_size)"
            )
        variant = MOAT_VARIANTS[name]
        return MOATConfig(
            name=name,
            stem_sizes=variant.stem_sizes,
            depths=variant.depths,
            hidden_sizes=variant.hidden_sizes,
            image_size=image_size,  # type: ignore[arg-type]  # normalised by the config
            num_classes=num_classes,
            pe="rpe" if pe is None else pe,
            attention="global" if attention is None else attention,
            window=window,  # type: ignore[arg-type]
            head_size=32 if head_size is None else head_size,
        )
    if head_size is not None:
        raise ValueError(
            f"head_size={head_size!r} is a MOAT option; DeiT sets its heads by num_heads"
        )
    if window is not None:
        raise ValueError(
            f"window={window!r} must be None for {name} (DeiT has global attention only)"
        )
    return DeiTConfig(
        name=name,
        image_size=image_size,  # type: ignore[arg-type]
        num_classes=num_classes,
        num_heads=3 if num_heads is None else num_heads,
        pe="absolute" if pe is None else pe,
        attention="global" if attention is None else attention,
    )


def build_model(
    config: MOATConfig | DeiTConfig,
    *,
    form: str = "standard",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build the model of ``config`` in ``form`` (``"standard"`` or ``"ane"``).

    ``device="meta"`` builds it without allocating its weights (to count the parameters of a
    large model, for instance).
    """
    if not isinstance(config, (MOATConfig, DeiTConfig)):
        raise TypeError(f"config must be a MOATConfig or DeiTConfig, got {type(config).__name__}")
    check_choice("form", form, FORMS)
    cls = _CLASSES[(type(config), form)]
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = cls(config)  # type: ignore[call-arg]
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def create_model(
    name: str,
    *,
    form: str = "standard",
    pe: str | None = None,
    attention: str | None = None,
    window: int | Sequence[int] | None = None,
    image_size: int | Sequence[int] = 224,
    num_classes: int = 1000,
    head_size: int | None = None,
    num_heads: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a model by name, in the standard or the Neural Engine's form.

    Args:
        name: one of :func:`list_models`: ``tiny_moat_0`` ... ``tiny_moat_3``, ``moat_0`` ...
            ``moat_4``, ``deit_tiny``.
        form: ``"standard"`` (the paper's layout) or ``"ane"``.
        pe: position embedding. MOAT: ``"rpe"`` (default; per-head relative position bias),
            ``"single_rpe"`` (one table for all heads), ``"lepe"`` (depthwise conv on V plus an
            absolute embedding), ``"none"``. DeiT: ``"absolute"`` (default, its only one).
        attention: ``"global"`` (default) or, for MOAT, ``"local"``.
        window: local-attention window, an int or ``(wh, ww)`` dividing the feature maps of
            MOAT's stages 3 and 4; required with ``attention="local"``, else ``None``.
        image_size: int or ``(H, W)``; multiples of 32 for MOAT, of 16 (the patch) for DeiT.
            The model is built for this size (position embeddings and, in the ANE form, every
            reshape depend on it) and accepts inputs of exactly this size.
        num_classes: classification head width.
        head_size: MOAT only: channels per head (default 32); must divide stages 3-4 widths.
        num_heads: DeiT only: number of heads (default 3); must divide the width 192.
        device: where to allocate the weights (``"meta"``: not at all).
        dtype: floating-point type of the weights (default float32).

    Returns:
        A :class:`~ane_lib.models.moat.MOAT`, :class:`~ane_lib.models.moat.MOATANE`,
        :class:`~ane_lib.models.deit.DeiT` or :class:`~ane_lib.models.deit.DeiTANE`, mapping
        ``(B, 3, H, W)`` to logits ``(B, num_classes)``, with ``.config`` and ``.form``.

    Raises:
        ValueError: naming the option, its value and the allowed values, for an unknown name,
            form or PE type, an image size that is not a multiple of 32 (16 for DeiT), a window
            that does not divide an attention stage's feature map, or a head size / head count
            that does not divide the channels.
    """
    check_choice("form", form, FORMS)
    config = create_config(
        name,
        pe=pe,
        attention=attention,
        window=window,
        image_size=image_size,
        num_classes=num_classes,
        head_size=head_size,
        num_heads=num_heads,
    )
    return build_model(config, form=form, device=device, dtype=dtype)


def _convert(model: nn.Module, form: str) -> nn.Module:
    if not isinstance(model, (MOAT, MOATANE, DeiT, DeiTANE)):
        raise TypeError(
            f"model must be a model built by ane_lib.models.create_model (MOAT, MOATANE, DeiT, "
            f"DeiTANE), or, for to_ane, an nn.TransformerEncoder(Layer) or a Hugging Face "
            f"DistilBertModel / DistilBertForSequenceClassification; got {type(model).__name__}"
        )
    reference = next(iter(model.parameters()))
    twin = build_model(model.config, form=form, device=reference.device, dtype=reference.dtype)
    twin.load_state_dict(model.state_dict())
    twin.train(model.training)
    return twin


def to_ane(model: nn.Module) -> nn.Module:
    """The same model in the Neural Engine's form: a new module with copied weights and buffers.

    ``model`` is a model from :func:`create_model` in either form (an ANE model gives a copy),
    a ``torch.nn.TransformerEncoder`` / ``TransformerEncoderLayer``, or a Hugging Face
    ``DistilBertModel`` / ``DistilBertForSequenceClassification`` (see
    :mod:`ane_lib.models.text`). The result has the same device, dtype, training mode, call
    signature and outputs as ``model``.
    """
    from ane_lib.models.text import text_model_to_ane  # until the registry dispatches by type

    twin = text_model_to_ane(model)
    return twin if twin is not None else _convert(model, "ane")


def to_standard(model: nn.Module) -> nn.Module:
    """The same model in the standard form (the inverse of :func:`to_ane`)."""
    return _convert(model, "standard")


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values of ``model`` (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())
