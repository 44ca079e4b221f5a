"""ane_lib.functional."""
