"""LightSeg's library: COVID-19 lung infection segmentation on chest CT, without Slicer."""

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
