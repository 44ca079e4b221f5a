"""The Neural Engine's rules, backend-neutral: one table, read by every report.

- :mod:`~ane_lib.ane_rules.graph`: a program described for the rules (:class:`Graph`,
  :class:`Op`, :class:`Value`), whatever toolchain made it.
- :mod:`~ane_lib.ane_rules.rules`: the rule table :data:`RULES` (id, what it checks, severity,
  sources, advice, check function).
- :mod:`~ane_lib.ane_rules.report`: :func:`analyse` applies the table and returns a
  :class:`Report` (text, ``to_dict()``, bytes per stage, the CLI's verdict).
- :mod:`~ane_lib.ane_rules.module_paths`: which PyTorch module each op came from.

Front ends: :func:`ane_lib.coreml.report` (Core ML packages). Another IR needs only a function
that builds a :class:`Graph`.
"""

from ane_lib.ane_rules.graph import (
    TOP_LEVEL,
    UNKNOWN_MODULE,
    Graph,
    Op,
    Shape,
    Value,
    WeightSummary,
    stage_of,
)
from ane_lib.ane_rules.module_paths import ModulePaths, node_modules
from ane_lib.ane_rules.plot import plot_padding_by_stage
from ane_lib.ane_rules.report import Report, StagePadding, analyse, default_stage_key
from ane_lib.ane_rules.rules import (
    FP16_MAX,
    LARGE_DILATION,
    LARGE_KERNEL,
    LAYOUT_OP_TYPES,
    MAX_RANK,
    MAX_SPATIAL,
    RULES,
    SEVERITIES,
    Finding,
    Rule,
    Severity,
    Source,
    rule,
)

__all__ = [
    "FP16_MAX",
    "LARGE_DILATION",
    "LARGE_KERNEL",
    "LAYOUT_OP_TYPES",
    "MAX_RANK",
    "MAX_SPATIAL",
    "RULES",
    "SEVERITIES",
    "TOP_LEVEL",
    "UNKNOWN_MODULE",
    "Finding",
    "Graph",
    "ModulePaths",
    "Op",
    "Report",
    "Rule",
    "Severity",
    "Shape",
    "Source",
    "StagePadding",
    "Value",
    "WeightSummary",
    "analyse",
    "default_stage_key",
    "node_modules",
    "plot_padding_by_stage",
    "rule",
    "stage_of",
]
