"""Which text-model converter :func:`ane_lib.models.to_ane` uses, chosen by the model's type.

PyTorch's ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``
(:mod:`ane_lib.models.torch_transformer`) and Hugging Face's ``DistilBertModel`` and
``DistilBertForSequenceClassification`` (:mod:`ane_lib.models.hf_distilbert`, needs the ``[hf]``
extra). Exact types only: a subclass may compute something else, so it is refused with an
error that names it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ane_lib.models.hf_distilbert import distilbert_to_ane, is_distilbert
from ane_lib.models.torch_transformer import (
    transformer_encoder_layer_to_ane,
    transformer_encoder_to_ane,
)

__all__ = ["TEXT_CONVERSIONS", "text_model_to_ane"]

#: Source type -> converter, for the types that need no optional package.
TEXT_CONVERSIONS: dict[type, Callable[..., nn.Module]] = {
    nn.TransformerEncoderLayer: transformer_encoder_layer_to_ane,
    nn.TransformerEncoder: transformer_encoder_to_ane,
}


def text_model_to_ane(model: nn.Module) -> nn.Module | None:
    """``model`` converted to the ANE form if it is a supported text model, else None."""
    for source_type, convert in TEXT_CONVERSIONS.items():
        if isinstance(model, source_type):  # a subclass gets the converter's own error
            return convert(model)
    if is_distilbert(model):
        return distilbert_to_ane(model)
    return None
