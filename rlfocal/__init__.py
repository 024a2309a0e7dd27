"""rlfocal: focal-style TD losses and prioritized replay, side by side, in controlled experiments."""

__version__ = "0.1.0"
