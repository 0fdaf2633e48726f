"""Standalone experiments on decision strategies (not part of the library)."""
