"""ane_lib.models."""
