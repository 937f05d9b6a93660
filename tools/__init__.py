"""Maintenance scripts (not shipped in the layer)."""
