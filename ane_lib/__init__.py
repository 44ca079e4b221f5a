"""ane_lib: PyTorch layers in the form the Apple Neural Engine runs well.

Every layer is tested against its standard form (same weights, same outputs).

Layers, lower to higher (a lower one never imports a higher one):
``functional`` <- ``nn`` <- ``models`` <- ``coreml`` / ``coreai`` <- ``cli``; ``zoo``
(third-party models exported, reported and verified) sits beside ``cli``, on ``models`` and
``coreml``.
"""

from ane_lib._warnings import filter_import_noise

__version__ = "0.1.0"

# torchao (installed with the [coreai] extra) logs two messages when any package imports it
filter_import_noise()

__all__ = ["__version__"]
