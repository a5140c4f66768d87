"""cellsynth: realistic single-cell RNA-seq cells from latent diffusion models."""

from ._version import __version__
from . import data, tl  # noqa: E402
from .model import CellSynth, Hyperparameters, SamplingOptions  # noqa: E402
from .tl import GeneVelocity, gene_velocity  # noqa: E402

__all__ = ["CellSynth", "GeneVelocity", "Hyperparameters", "SamplingOptions", "data", "gene_velocity", "tl", "__version__"]
