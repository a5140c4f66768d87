"""Tools on a trained model, scanpy-style: paths between states, perturbation
responses, gene velocity along a path.

Examples
--------
>>> import cellsynth
>>> path = cellsynth.tl.interpolate(m, {"cell_type": "A"}, {"cell_type": "B"})  # doctest: +SKIP
>>> vel = cellsynth.tl.gene_velocity(path)  # doctest: +SKIP
>>> pred = cellsynth.tl.predict_perturbation(m, ctrl, {"treatment": "stim"})  # doctest: +SKIP
"""

from .interpolate import interpolate, slerp
from .perturb import predict_perturbation
from .shift import LatentShift, latent_shift
from .state_shift import StateShift, state_shift
from .velocity import GeneVelocity, gene_velocity

__all__ = ["GeneVelocity", "LatentShift", "StateShift", "gene_velocity", "interpolate", "latent_shift",
           "predict_perturbation", "slerp", "state_shift"]
