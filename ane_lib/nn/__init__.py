"""ane_lib.nn."""
