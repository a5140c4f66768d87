"""Data intake, bundled data sets and simulators."""

from .datasets import pbmc68k_counts
from .intake import InputError, Prepared, detect_kind, normalise_log, prepare, read
from .simulate import simulate, simulate_perturbation, simulate_trajectory, simulate_transcriptome

__all__ = ["pbmc68k_counts", "InputError", "Prepared", "detect_kind", "normalise_log", "prepare", "read", "simulate", "simulate_perturbation", "simulate_trajectory", "simulate_transcriptome"]
