"""ane_lib: PyTorch layers in the form the Apple Neural Engine runs well.

Every layer is tested against its standard form (same weights, same outputs).

Layers, lower to higher (a lower one never imports a higher one):
``functional`` <- ``nn`` <- ``models`` <- ``coreml`` <- ``cli``; ``zoo`` (third-party models
exported, reported and verified) sits beside ``cli``, on ``models`` and ``coreml``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
