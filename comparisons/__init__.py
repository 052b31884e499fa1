"""Installed as sfx_cnnhit.comparisons."""
