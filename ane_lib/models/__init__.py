"""ane_lib.models: whole models (MOAT, DeiT) in the standard and the Neural Engine's form.

    model = create_model("tiny_moat_1", form="standard", pe="rpe", attention="local",
                         window=8, image_size=256)
    ane = to_ane(model)      # same outputs, ANE-friendly layout

``to_ane`` also converts PyTorch's ``nn.TransformerEncoder`` / ``TransformerEncoderLayer``
(:mod:`ane_lib.models.torch_transformer`) and Hugging Face's DistilBERT
(:mod:`ane_lib.models.hf_distilbert`, the ``[hf]`` extra), keeping their call signatures.

``perturb_weights_(model)`` makes an untrained model's constants unequal, as training would,
before an export whose package should look like a trained model's; ``unit_variance_init_(model,
x)`` gives a freshly initialised model the unit-scale activations of a trained one, before fp16
is measured on it.

``list_models()`` names ``tiny_moat_0`` ... ``tiny_moat_3``, ``moat_0`` ... ``moat_4`` and
``deit_tiny``: the models registered by this package. :mod:`ane_lib.models.registry` says how
to register another model, a new family, or a conversion of another module type.
"""

from ane_lib.models.config import (
    ATTENTION_MODES,
    DEIT_PE_TYPES,
    MOAT_PE_TYPES,
    MOAT_VARIANTS,
    AttentionMode,
    DeiTConfig,
    MOATConfig,
    MOATVariant,
)

# importing the family modules registers the families and their models
from ane_lib.models.deit import DeiT, DeiTANE
from ane_lib.models.moat import MOAT, MOATANE, flat_layout
from ane_lib.models.registry import (
    FORMS,
    Form,
    RegisteredModel,
    build_model,
    config_from_dict,
    count_parameters,
    create_config,
    create_model,
    families,
    list_models,
    model_accepts,
    model_entry,
    option_choices,
    register_conversion,
    register_family,
    register_model,
    to_ane,
    to_standard,
)
from ane_lib.models.torch_transformer import TransformerEncoderANE, TransformerEncoderLayerANE
from ane_lib.models.weights import perturb_weights_, unit_variance_init_

__all__ = [
    "ATTENTION_MODES",
    "DEIT_PE_TYPES",
    "FORMS",
    "MOAT_PE_TYPES",
    "MOAT_VARIANTS",
    "AttentionMode",
    "DeiT",
    "DeiTANE",
    "DeiTConfig",
    "Form",
    "MOAT",
    "MOATANE",
    "MOATConfig",
    "MOATVariant",
    "RegisteredModel",
    "TransformerEncoderANE",
    "TransformerEncoderLayerANE",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "create_config",
    "create_model",
    "families",
    "flat_layout",
    "list_models",
    "model_accepts",
    "model_entry",
    "option_choices",
    "perturb_weights_",
    "unit_variance_init_",
    "register_conversion",
    "register_family",
    "register_model",
    "to_ane",
    "to_standard",
]

# Importing it registers to_ane's conversions of torch's and Hugging Face's encoders.
from ane_lib.models import text as _text  # noqa: E402,F401
