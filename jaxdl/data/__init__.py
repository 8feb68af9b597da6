"""Data: loading bundled sets, cleaning, normalization, augmentation, batch plans."""

from jaxdl.data import arrays, validate

__all__ = ["arrays", "validate"]
