"""The text models :func:`ane_lib.models.to_ane` converts, registered by type.

PyTorch's ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``
(:mod:`ane_lib.models.torch_transformer`) and Hugging Face's ``DistilBertModel`` and
``DistilBertForSequenceClassification`` (:mod:`ane_lib.models.hf_distilbert`, needs the ``[hf]``
extra; registered by qualified name, so ``transformers`` is imported only when such a model is
converted). The converters accept exact types only: a subclass may compute something else, so
it is refused with an error that names it.
"""

from __future__ import annotations

from torch import nn

from ane_lib.models.hf_distilbert import distilbert_to_ane
from ane_lib.models.registry import register_conversion
from ane_lib.models.torch_transformer import (
    transformer_encoder_layer_to_ane,
    transformer_encoder_to_ane,
)

__all__: list[str] = []

_DISTILBERT = "transformers.models.distilbert.modeling_distilbert"

register_conversion(nn.TransformerEncoderLayer)(transformer_encoder_layer_to_ane)
register_conversion(nn.TransformerEncoder)(transformer_encoder_to_ane)
register_conversion(f"{_DISTILBERT}.DistilBertModel")(distilbert_to_ane)
register_conversion(f"{_DISTILBERT}.DistilBertForSequenceClassification")(distilbert_to_ane)
