"""Plain torch modules: tensors in, tensors out, no AnnData."""

from .classifier import Discriminator, LatentClassifier
from .denoiser import SkipMLP, timestep_embedding
from .ema import EMA
from .encoders import DECODERS, ENCODERS, VAE, AutoEncoder, DecoderOutput, nb_log_likelihood

__all__ = ["Discriminator", "LatentClassifier", "SkipMLP", "timestep_embedding", "EMA", "DECODERS", "ENCODERS", "VAE", "AutoEncoder", "DecoderOutput", "nb_log_likelihood"]
