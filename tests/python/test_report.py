"""The evaluation report: cellsynth evaluate writes metrics.json and a self-contained
report.html whose figures are real PNGs (issue 27)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsynth.cli import main
from cellsynth.data import simulate
from cellsynth.metrics.report import N_MARKERS, marker_overlap, transfer_labels


def test_evaluate_writes_metrics_and_a_readable_report(trained, toy, tmp_path):
    real, train = toy[:60].copy(), toy[60:].copy()
    gen = trained.generate(60, per_condition=True, seed=0, progress_bar=False)
    paths = {}
    for name, a in (("real", real), ("train", train), ("gen", gen)):
        paths[name] = tmp_path / f"{name}.h5ad"
        a.write_h5ad(paths[name])
    out = tmp_path / "ev"
    assert main(["evaluate", str(paths["real"]), str(paths["gen"]), "--train", str(paths["train"]),
                 "--label", "cell_type", "--out", str(out)]) == 0
    rep = json.loads((out / "metrics.json").read_text())
    assert {"generated", "control", "mmd_ratio", "memorisation"} <= set(rep)
    page = (out / "report.html").read_text()
    for section in ("UMAP of real and generated cells", "Per-gene statistics", "Sequencing depth", "Memorisation"):
        assert section in page
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) >= 4
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert f"{rep['generated']['rf_auc']:.3f}" in page  # the table shows the same numbers
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    # an unknown label column is refused before any work
    assert main(["evaluate", str(paths["real"]), str(paths["gen"]), "--label", "nope", "--out", str(tmp_path / "ev2")]) == 2
    assert not (tmp_path / "ev2" / "report.html").exists()


def test_marker_overlap_counts_shared_top_markers():
    """Identical sets share every marker; a set whose labels are shuffled shares few."""
    a = simulate(300, 200, 3, seed=0)
    x = np.log1p(a.X.toarray() / a.X.toarray().sum(1, keepdims=True) * 1e4).astype(np.float32)
    lab = a.obs["cell_type"].astype(str).to_numpy()
    same = marker_overlap(x, lab, x, lab, list(a.var_names))
    assert (same["generated"] == 1.0).all() and len(same) == 3
    shuffled = np.random.default_rng(0).permutation(lab)
    low = marker_overlap(x, lab, x, shuffled, list(a.var_names))
    assert low["generated"].mean() < 0.5
    assert set(same.columns) == {"label", "generated", "ceiling"} and N_MARKERS == 25


def test_transfer_labels_by_nearest_neighbours():
    pcs = np.r_[np.zeros((20, 2)), np.full((20, 2), 10.0)]
    lab = np.r_[["a"] * 20, ["b"] * 20]
    assert transfer_labels(pcs, lab, np.array([[0.5, 0.2], [9.0, 11.0]])).tolist() == ["a", "b"]
