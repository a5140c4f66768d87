"""Model files (safetensors + JSON + gene list)."""

from .checkpoint import ModelFileError, load_model, save_model

__all__ = ["ModelFileError", "load_model", "save_model"]
