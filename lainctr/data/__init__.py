"""Data pipeline: H5 dataset store, validation, batch loader and synthetic generator."""
