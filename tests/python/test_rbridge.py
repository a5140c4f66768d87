"""The Python half of the R boundary (R/convert.R is the other half, tested in
tests/testthat): parts -> AnnData -> parts keeps matrices, names and missing values."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellsynth.io.rbridge import anndata_from_r, anndata_to_r, fingerprint


def _parts_of(m: sp.csr_matrix) -> dict:
    return {"x": m.data.astype(float), "i": m.indices.astype(np.int32), "p": m.indptr.astype(np.int64)}


def _example():
    rng = np.random.default_rng(0)
    counts = sp.random(6, 4, density=0.5, format="csr", random_state=1, data_rvs=lambda n: rng.integers(1, 9, n)).astype(float)
    obs = {
        "cell_type": {"kind": "factor", "values": np.array([1, 2, 0, 1, 3, 2], np.int32), "na": np.array([0, 0, 1, 0, 0, 0], bool), "levels": ["B", "T", "unused"], "ordered": False},
        "flag": {"kind": "logical", "values": np.array([1, 0, 0, 1, 1, 0], np.int32), "na": np.array([0, 0, 1, 0, 0, 0], bool)},
        "n": {"kind": "integer", "values": np.array([1, 0, -3, 2**31 - 1, 5, 6], np.int32), "na": np.array([0, 1, 0, 0, 0, 0], bool)},
        "score": {"kind": "double", "values": np.array([0.5, np.nan, 1, 2, 3, 4]), "na": np.array([0, 1, 0, 0, 0, 0], bool)},
        "word": {"kind": "character", "values": ["a", "", "b c", "", "d", "e"], "na": np.array([0, 1, 0, 0, 0, 0], bool)},
    }
    return counts, obs


def test_parts_round_trip_keeps_matrices_names_and_missing_values():
    counts, obs = _example()
    data = counts.copy()
    data.data = np.log1p(data.data)
    a = anndata_from_r(_parts_of(counts), _parts_of(data), [f"c{i}" for i in range(6)], ["g0", "g1", "g2", "g3"], obs)
    assert (a.layers["counts"] != counts).nnz == 0 and np.allclose(a.X.toarray(), data.toarray())
    assert list(a.obs_names) == [f"c{i}" for i in range(6)] and list(a.var_names) == ["g0", "g1", "g2", "g3"]
    ct = a.obs["cell_type"]
    assert list(ct.cat.categories) == ["B", "T", "unused"] and ct.isna().tolist() == [False, False, True, False, False, False]
    assert ct.iloc[0] == "B" and ct.iloc[4] == "unused"
    assert a.obs["flag"].dtype == "boolean" and pd.isna(a.obs["flag"].iloc[2])
    assert a.obs["n"].dtype == "Int32" and pd.isna(a.obs["n"].iloc[1]) and a.obs["n"].iloc[3] == 2**31 - 1
    assert a.obs["word"].iloc[1] is None and a.obs["word"].iloc[2] == "b c"

    back = anndata_to_r(a)
    np.testing.assert_array_equal(back["counts"]["i"], counts.indices)
    np.testing.assert_array_equal(back["counts"]["p"], counts.indptr)
    np.testing.assert_array_equal(back["counts"]["x"], counts.data)
    for col, part in obs.items():
        got = back["obs"][col]
        assert got["kind"] == part["kind"]
        np.testing.assert_array_equal(got["na"], part["na"])
        keep = ~part["na"]
        if part["kind"] == "double":
            np.testing.assert_array_equal(got["values"][keep], part["values"][keep])
        else:
            np.testing.assert_array_equal(np.asarray(got["values"])[keep], np.asarray(part["values"])[keep])
    assert back["obs"]["cell_type"]["levels"] == ["B", "T", "unused"]


def test_inconsistent_parts_and_unknown_kinds_are_refused():
    counts, obs = _example()
    bad = _parts_of(counts)
    bad["p"] = bad["p"][:-1]
    with pytest.raises(ValueError, match="inconsistent sparse parts"):
        anndata_from_r(bad, None, [f"c{i}" for i in range(6)], ["a", "b", "c", "d"], {})
    with pytest.raises(ValueError, match="unknown meta.data kind"):
        anndata_from_r(_parts_of(counts), None, [f"c{i}" for i in range(6)], ["a", "b", "c", "d"], {"x": {"kind": "list", "values": [], "na": []}})


def test_fingerprint_changes_with_data_labels_and_settings():
    counts, obs = _example()
    a = anndata_from_r(_parts_of(counts), None, [f"c{i}" for i in range(6)], ["a", "b", "c", "d"], obs)
    base = fingerprint(a, ["cell_type"], {"seed": 1})
    assert fingerprint(a.copy(), ["cell_type"], {"seed": 1}) == base
    assert fingerprint(a, ["cell_type"], {"seed": 2}) != base
    assert fingerprint(a, ["flag"], {"seed": 1}) != base
    b = a.copy()
    b.layers["counts"].data[0] += 1
    assert fingerprint(b, ["cell_type"], {"seed": 1}) != base
