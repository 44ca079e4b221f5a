"""ane_lib.zoo: third-party models (Hugging Face ``transformers``) exported, reported and verified.

- :mod:`ane_lib.zoo.catalog`: the zoo's models (:data:`ZOO`), built from their configurations
  with random weights (:func:`build`), their inputs (:func:`zoo_inputs`) and the entry point
  that ``ane-lib verify --model`` rebuilds them with (:func:`entry_point`).
- :mod:`ane_lib.zoo.table`: one row per model (:func:`evaluate`, :func:`zoo_table`): does it
  export (and if not, the error a user sees), what the report says, what fp16 costs.

Needs the ``[hf]`` and ``[coreml]`` extras. The models are not registered in
:mod:`ane_lib.models.registry`: they stand for the models a user brings.
"""

from ane_lib.zoo.catalog import *  # noqa: F403 - the catalog's public names are the package's
from ane_lib.zoo.catalog import __all__  # noqa: F401
