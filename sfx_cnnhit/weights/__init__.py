"""Shipped model weights and their provenance."""
