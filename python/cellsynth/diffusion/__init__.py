"""Noise schedules and samplers (no model code)."""

from .ddim import DDIMSampler
from .ddpm import DDPMSampler, StepOutput
from .schedule import SCHEDULES, NoiseSchedule, extract, make_betas

__all__ = ["DDIMSampler", "DDPMSampler", "StepOutput", "SCHEDULES", "NoiseSchedule", "extract", "make_betas"]
