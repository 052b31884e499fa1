"""Installed as sfx_cnnhit.plugins."""
