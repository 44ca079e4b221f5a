"""ane_lib.coreml."""
