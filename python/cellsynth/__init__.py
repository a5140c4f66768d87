"""cellsynth: realistic single-cell RNA-seq cells from latent diffusion models."""

__version__ = "0.1.0"

from . import data  # noqa: E402
from .model import CellSynth, Hyperparameters  # noqa: E402
from .velocity import GeneVelocity, gene_velocity  # noqa: E402

__all__ = ["CellSynth", "GeneVelocity", "Hyperparameters", "data", "gene_velocity", "__version__"]
