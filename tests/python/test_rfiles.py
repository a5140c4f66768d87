"""cellsynth.io.read_seurat / read_sce (optional extra: rpy2 + anndata2ri, and R).
`make rcheck` installs the extra and runs this file; plain pytest skips it when the
extra or R is missing."""

import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("rpy2", reason="optional extra 'r' (rpy2<3.6, anndata2ri) not installed")
pytest.importorskip("anndata2ri", reason="optional extra 'r' (rpy2<3.6, anndata2ri) not installed")
if shutil.which("Rscript") is None:
    pytest.skip("R is not installed", allow_module_level=True)

from cellsynth.io import read_sce, read_seurat  # noqa: E402


@pytest.fixture(scope="module")
def rds(tmp_path_factory):
    d = tmp_path_factory.mktemp("rds")
    code = (
        f"seu <- SeuratObject::pbmc_small; saveRDS(seu, '{d}/seu.rds');"
        f"saveRDS(Seurat::as.SingleCellExperiment(seu), '{d}/sce.rds');"
        f"m <- as.matrix(SeuratObject::GetAssayData(seu, slot = 'counts'));"
        f"write.csv(data.frame(s = colSums(m)), '{d}/libsize.csv');"
        f"writeLines(as.character(seu$groups), '{d}/groups.txt')"
    )
    r = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"R could not write the test files: {r.stderr[-300:]}")
    return d


def test_read_seurat_keeps_counts_data_and_meta(rds):
    a = read_seurat(rds / "seu.rds")
    assert a.shape == (80, 230)
    lib = np.loadtxt(rds / "libsize.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(np.asarray(a.layers["counts"].sum(1)).ravel(), lib)
    # X is Seurat's log-normalised data: log1p(count / library size * 1e4)
    c = a.layers["counts"].toarray()
    np.testing.assert_allclose(np.asarray(a.X.todense()), np.log1p(c / c.sum(1, keepdims=True) * 1e4), rtol=1e-6, atol=1e-6)
    assert list(a.obs["groups"].astype(str)) == (rds / "groups.txt").read_text().split()


def test_read_sce_and_wrong_kind(rds):
    a = read_sce(rds / "sce.rds")
    assert a.shape == (80, 230) and "counts" in a.layers
    with pytest.raises(ValueError, match="not a SingleCellExperiment; use cellsynth.io.read_seurat"):
        read_sce(rds / "seu.rds")
    with pytest.raises(FileNotFoundError):
        read_seurat(rds / "missing.rds")
