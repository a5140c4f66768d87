"""The model object: :class:`CellSynth` and its configuration."""

from .config import Hyperparameters, SamplingOptions, default_device
from .core import CellSynth

__all__ = ["CellSynth", "Hyperparameters", "SamplingOptions", "default_device"]
