"""nn.Modules in the form the Apple Neural Engine runs well, their standard twins, and the
tools that move weights between a model's standard form and its ANE form.

Each ``...ANE`` module equals its standard twin (same weights, same outputs); the two load each
other's state dicts. Merging, folding and splitting layers exactly (``merge_convs``,
``fold_batchnorm``, ``reparameterize``, ``split_conv``, ...) live here too.
"""

from ane_lib.nn.attention import MultiHeadAttention, MultiHeadAttentionANE
from ane_lib.nn.encoder import ACTIVATIONS, EncoderLayerANE, FeedForwardANE, SelfAttentionANE
from ane_lib.nn.linear_conv import (
    Conv1x1LoadHooks,
    conv1x1_from_linear,
    linear_from_conv1x1,
    load_linear_state_dict,
    register_linear_to_conv1x1_hook,
    register_projection_layout_hooks,
)
from ane_lib.nn.load_hooks import LoadHook, register_load_hook
from ane_lib.nn.mbconv import (
    BN_EPS,
    BN_MOMENTUM,
    MBConvBlock,
    MBConvBlockANE,
    SqueezeExcitation,
)
from ane_lib.nn.merge import fold_batchnorm, merge_chain, merge_convs
from ane_lib.nn.moat_block import LN_EPS, MOATBlock, MOATBlockANE
from ane_lib.nn.norm import LayerNormANE
from ane_lib.nn.position import (
    PE_TYPES,
    AbsolutePositionEmbedding,
    APELayout,
    LePEConv,
    PEType,
    RelativePositionBias,
    relative_position_index,
)
from ane_lib.nn.reparam import RepConv2d, reparameterize
from ane_lib.nn.split import dilation_factors, factor_dilation, split_conv
from ane_lib.nn.transformer import Mlp, MlpANE, TransformerBlock, TransformerBlockANE

__all__ = [
    "ACTIVATIONS",
    "BN_EPS",
    "BN_MOMENTUM",
    "LN_EPS",
    "PE_TYPES",
    "APELayout",
    "AbsolutePositionEmbedding",
    "Conv1x1LoadHooks",
    "EncoderLayerANE",
    "FeedForwardANE",
    "LayerNormANE",
    "LePEConv",
    "LoadHook",
    "MBConvBlock",
    "MBConvBlockANE",
    "MOATBlock",
    "MOATBlockANE",
    "Mlp",
    "MlpANE",
    "MultiHeadAttention",
    "MultiHeadAttentionANE",
    "PEType",
    "RelativePositionBias",
    "RepConv2d",
    "SelfAttentionANE",
    "SqueezeExcitation",
    "TransformerBlock",
    "TransformerBlockANE",
    "conv1x1_from_linear",
    "dilation_factors",
    "factor_dilation",
    "fold_batchnorm",
    "linear_from_conv1x1",
    "load_linear_state_dict",
    "merge_chain",
    "merge_convs",
    "register_linear_to_conv1x1_hook",
    "register_load_hook",
    "register_projection_layout_hooks",
    "relative_position_index",
    "reparameterize",
    "split_conv",
]
