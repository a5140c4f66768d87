"""Generated counts for fixed seeds from a small saved model: the record that keeps
refactors behaviour-preserving.

``python tests/python/golden/cases.py --write`` trains the small model (saved beside
this file in ``model/``) and records every case's counts (``counts.npz``) and their
hashes (``hashes.json``). ``test_golden.py`` loads that model and checks the cases
reproduce. Re-record only for an intended change of behaviour, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model"
HASHES = HERE / "hashes.json"
COUNTS = HERE / "counts.npz"

TINY = dict(
    latent_dim=8, encoder_hidden=[32], encoder_epochs=40, denoiser_hidden=[32, 32], diffusion_steps=200, n_steps=100,
    classifier_hidden=[32, 32], classifier_steps=150, discriminator_steps=150,
)


def data():
    """The training cells (simulated with numpy only, so the same on every machine)."""
    from cellsynth.data import simulate_perturbation

    return simulate_perturbation(240, 40, 3, seed=0)


def control_cells():
    a = data()
    return a[(a.obs["cell_type"] == "type0") & (a.obs["condition"] == "control")].copy()


def cases(m) -> dict:
    """name -> AnnData of generated cells, every call with a fixed seed."""
    from cellsynth import tl

    ctrl = control_cells()
    start, end = {"cell_type": "type0"}, {"cell_type": "type1"}
    return {
        "unconditional": m.generate(48, seed=1, progress_bar=False),
        "cfg": m.generate(32, conditions={"cell_type": "type2"}, scale=2.0, seed=2, progress_bar=False),
        "cfg_two_columns": m.generate(24, conditions={"cell_type": "type1", "condition": "stimulated"}, seed=3, progress_bar=False),
        "classifier": m.generate(32, conditions={"cell_type": "type1"}, guidance="classifier", seed=4, progress_bar=False),
        "per_condition": m.generate(36, per_condition=True, seed=5, progress_bar=False),
        "ddpm": m.generate(16, sampler="ddpm", seed=6, progress_bar=False),
        "ddim_eta": m.generate(16, eta=0.5, steps=20, seed=7, progress_bar=False),
        "filter_discriminator": m.generate(20, filter="discriminator", seed=8, progress_bar=False),
        "filter_classifier": m.generate(20, conditions={"cell_type": "type0"}, filter="classifier", seed=9, progress_bar=False),
        "interpolate_gradient": tl.interpolate(m, start, end, method="gradient", n_positions=4, n_cells=8, depth=60, seed=10),
        "interpolate_prior": tl.interpolate(m, start, end, method="prior", n_positions=4, n_cells=8, seed=11),
        "interpolate_latent": tl.interpolate(m, start, end, method="latent", n_positions=4, n_cells=8, seed=12),
        "interpolate_real_ends": tl.interpolate(m, start, end, method="prior", n_positions=3, n_cells=6, adata=data(), seed=13),
        "perturb_diffusion": tl.predict_perturbation(m, ctrl, {"condition": "stimulated"}, seed=14),
        "perturb_shift": tl.predict_perturbation(m, ctrl, {"condition": "stimulated"}, method="shift", seed=15),
        "perturb_on_labels": tl.predict_perturbation(m, ctrl, {"condition": "stimulated"}, condition_on_labels=True, depth=30, seed=16),
        "stream": streamed(m, 40, chunk_size=16, conditions={"cell_type": "type2"}, seed=17),
    }


def streamed(m, n, **kwargs):
    """Cells written by ``generate_to_file`` and read back."""
    import anndata as ad

    with tempfile.TemporaryDirectory() as d:
        path = m.generate_to_file(n, Path(d) / "cells.h5ad", progress_bar=False, **kwargs)
        return ad.read_h5ad(path)


def counts_of(a) -> np.ndarray:
    c = a.layers["counts"]
    return np.ascontiguousarray(c.toarray() if hasattr(c, "toarray") else c, dtype=np.int64)


def digest(c: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(c, dtype=np.int64).tobytes() + str(c.shape).encode()).hexdigest()


def load_model():
    from cellsynth import CellSynth

    return CellSynth.load(MODEL)


def write() -> None:
    from cellsynth import CellSynth

    torch.set_num_threads(1)
    m = CellSynth(data(), labels=["cell_type", "condition"], seed=0, **TINY).fit(progress_bar=False)
    m.save(MODEL, overwrite=True)
    m = load_model()  # record what a loaded model gives, as the test sees it
    got = {k: counts_of(v) for k, v in cases(m).items()}
    np.savez_compressed(COUNTS, **got)
    HASHES.write_text(json.dumps({
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hashes": {k: digest(v) for k, v in got.items()},
    }, indent=1) + "\n")
    print(f"recorded {len(got)} cases in {HASHES}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
