"""Model files (safetensors + JSON + gene list)."""

from .checkpoint import ModelFileError, load_model, save_model
from .rfiles import read_sce, read_seurat

__all__ = ["ModelFileError", "load_model", "read_sce", "read_seurat", "save_model"]
