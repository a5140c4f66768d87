"""The plot the demo writes."""

import numpy as np

from cellsynth.plotting import umap_real_vs_generated


def test_umap_plot_is_written(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.gamma(1, 1, (60, 20))
    gen = rng.gamma(1, 1, (50, 20))
    out = umap_real_vs_generated(real, gen, tmp_path / "u.png", real_labels=np.repeat(["a", "b", "c"], 20))
    data = (tmp_path / "u.png").read_bytes()
    assert out.endswith("u.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
