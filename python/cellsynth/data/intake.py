"""Data intake: validate an AnnData, tell counts from log-normalised values, normalise.

Everything that trains on user data goes through :func:`prepare`, which either
returns a :class:`Prepared` bundle or raises :class:`InputError` with a message that
names the problem and the fix. Nothing is coerced silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .recover import recover_counts
from .genes import MIN_CELLS, N_TOP_GENES, GeneChoice, choose_genes
from .normalise import TARGET_SUM, normalise_log  # noqa: F401 (normalise_log: re-exported)

log = logging.getLogger("cellsynth")

#: rows densified at a time
ROWS = 4096
#: values checked at a time (bounds the temporaries of the checks)
CHUNK = 1 << 24
#: no count of one gene in one cell is anywhere near this (a 10x library is ~1e4-1e5)
MAX_VALUE = 1e9


@dataclass
class Prepared:
    """What the model trains on, fixed at set-up time: the modelled genes of the usable
    cells (dense), and a per-gene model of the other genes."""

    genes: list[str]  # the modelled genes (columns of x_log / counts)
    x_log: np.ndarray  # (cells, modelled genes) float32, log1p(normalise_total 1e4)
    counts: np.ndarray | None  # (cells, modelled genes) float32 integer-valued, or None
    library: np.ndarray  # (cells,) counts over the modelled genes (1e4 for log-normalised input)
    input_kind: str  # "counts" | "lognorm"
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # column -> int codes
    categories: dict[str, list[str]] = field(default_factory=dict)  # column -> names
    obs_names: list[str] = field(default_factory=list)
    all_genes: list[str] = field(default_factory=list)  # every input gene, input order
    choice: GeneChoice | None = None  # which genes are modelled, and why
    rest_genes: np.ndarray | None = None  # positions of the genes not modelled (None: all modelled)
    rest_matrix: object = None  # the usable cells' matrix over all genes (sparse, not copied) ...
    rest_rows: np.ndarray | None = None  # ... and which of its rows are the training cells
    var: pd.DataFrame | None = None  # the input's gene annotations (all genes)


def read(data: ad.AnnData | str | os.PathLike) -> ad.AnnData:
    """An AnnData as given, or read from an ``.h5ad`` path."""
    if isinstance(data, ad.AnnData):
        return data
    path = os.fspath(data)
    if not os.path.exists(path):
        raise InputError(f"No such file: {path!r}. Pass an AnnData or the path of an existing .h5ad file.")
    if not path.endswith(".h5ad"):
        raise InputError(f"{path!r} is not an .h5ad file. Convert it with anndata/scanpy (e.g. sc.read_10x_h5(...).write_h5ad(...)).")
    if os.path.isdir(path):
        raise InputError(f"{path!r} is a directory; pass an .h5ad file.")
    try:
        return ad.read_h5ad(path)
    except Exception as e:  # h5py/anndata raise OSError, KeyError, ValueError, ... for damaged files
        raise InputError(
            f"{path!r} could not be read as .h5ad ({type(e).__name__}: {str(e)[:120]}): the file is truncated, "
            "damaged or in another format. Re-export it with adata.write_h5ad(...)."
        ) from e


#: log-normalised values above this are not log-normalised (log1p of 1e4-normalised
#: counts stays below ~10, log1p of CPM or log2 TPM below ~20)
MAX_LOG_VALUE = 50.0


def check_log_range(max_value: float, where: str) -> None:
    """Refuse non-integer values too large to be log-normalised (scaled counts, CPM, ...)."""
    if max_value > MAX_LOG_VALUE:
        raise InputError(
            f"{where} holds non-integer values up to {max_value:.4g}: neither raw counts (whole numbers) nor "
            f"log-normalised values (at most ~{MAX_LOG_VALUE:g}). Pass raw counts (e.g. layer='counts'), or "
            "log-normalise first (sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata))."
        )


def _dense32(m) -> np.ndarray:
    """A float32 dense copy of ``m``, densified :data:`ROWS` rows at a time."""
    out = np.empty(m.shape, np.float32)
    for s0 in range(0, m.shape[0], ROWS):
        block = m[s0 : s0 + ROWS]
        out[s0 : s0 + ROWS] = block.toarray() if sp.issparse(block) else np.asarray(block)
    return out


def _rows(m) -> sp.csr_matrix | np.ndarray:
    """``m`` as CSR when sparse (row slicing), else as an array; never densified."""
    return sp.csr_matrix(m) if sp.issparse(m) else np.asarray(m)


def _row_sums(m) -> np.ndarray:
    return np.asarray(m.sum(1), dtype=np.float64).ravel()


def _values(m) -> np.ndarray:
    """The stored values of a matrix (non-zeros only for sparse), for cheap checks."""
    return np.asarray(m.data if sp.issparse(m) else m)


def detect_kind(m) -> str:
    """``"counts"`` when every value is a non-negative integer, else ``"lognorm"``."""
    v = _values(m).ravel()
    for s in range(0, v.size, CHUNK):  # in chunks: no full-size temporaries
        if not np.all(np.equal(np.mod(v[s : s + CHUNK], 1), 0)):
            return "lognorm"
    return "counts"


def check_not_empty(shape: tuple[int, int], where: str) -> None:
    """Refuse a matrix with no cells or no genes."""
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"{where} is empty ({shape[0]} cells x {shape[1]} genes); cellsynth needs at least one cell and one gene.")


def check_unique_genes(names: pd.Index) -> None:
    """Refuse duplicated gene names."""
    if names.has_duplicates:
        dup = names[names.duplicated()][:5].tolist()
        raise InputError(f"Gene names are not unique (e.g. {dup}); run adata.var_names_make_unique() first.")


def usable_cells(totals: np.ndarray, drop_empty_cells: bool) -> np.ndarray:
    """Mask of cells with expression: zero-total cells are refused, or dropped with a
    warning when ``drop_empty_cells``; fewer than two usable cells are refused."""
    keep = totals > 0
    if not keep.all():
        if not drop_empty_cells:
            raise InputError(
                f"{int((~keep).sum())} cell(s) have zero total expression. Filter them "
                "(sc.pp.filter_cells(adata, min_counts=1)) or pass drop_empty_cells=True "
                "(--drop-empty-cells) to drop them with a warning."
            )
        log.warning("dropping %d cell(s) with zero counts", int((~keep).sum()))
    if keep.sum() < 2:
        raise InputError(f"Only {int(keep.sum())} usable cell(s); cellsynth needs at least 2 cells to train.")
    return keep


def validate_matrix(m, where: str) -> None:
    """Refuse empty, non-finite or negative matrices."""
    check_not_empty(m.shape, where)
    v = _values(m)
    if not np.issubdtype(v.dtype, np.number):
        raise InputError(f"{where} holds {v.dtype} values; expected numbers (counts or log-normalised expression).")
    bad = ~np.isfinite(v)
    if bad.any():
        raise InputError(
            f"{where} contains {int(bad.sum())} NaN/inf value(s). Remove or impute them before training "
            "(e.g. adata = adata[:, np.isfinite(adata.X.sum(0))] to drop genes with missing values)."
        )
    if v.size and v.max() > MAX_VALUE:
        raise InputError(
            f"{where} holds values up to {v.max():.3g}: far beyond any read or UMI count (at most {MAX_VALUE:.0e}). "
            "Check the matrix (units, a scaling step); pass raw counts or log-normalised values."
        )
    if (v < 0).any():
        raise InputError(
            f"{where} contains negative values (min {v.min():.3g}): it looks scaled or batch-corrected. "
            "Pass raw counts (preferred, e.g. layer='counts') or log-normalised values (adata.raw)."
        )


def encode_labels(obs: pd.DataFrame, columns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Integer codes and category names for each label column."""
    codes, cats = {}, {}
    for col in columns:
        if col not in obs.columns:
            avail = ", ".join(map(repr, obs.columns[:20])) or "none"
            raise InputError(f"Label column {col!r} is not in adata.obs. Available columns: {avail}.")
        s = obs[col]
        if s.isna().any():
            raise InputError(
                f"Label column {col!r} has {int(s.isna().sum())} missing value(s). Fill them "
                f"(e.g. adata.obs[{col!r}] = adata.obs[{col!r}].astype(str)) or drop those cells."
            )
        if s.dtype.kind == "f" and s.nunique() > max(20, 0.5 * len(s)):
            log.warning(
                "label column %r holds %d distinct numbers in %d cells: it looks continuous, and each value becomes its "
                "own class. Bin it first (e.g. pd.cut(adata.obs[%r], 5)) or leave it out of the labels.",
                col, s.nunique(), len(s), col,
            )
        cat = pd.Categorical(s.astype(str) if not isinstance(s.dtype, pd.CategoricalDtype) else s)
        cat = cat.remove_unused_categories()
        codes[col] = np.asarray(cat.codes, dtype=np.int64)
        cats[col] = [str(c) for c in cat.categories]
    return codes, cats


def prepare(
    adata: ad.AnnData | str | os.PathLike,
    *,
    labels: list[str] | None = None,
    layer: str | None = None,
    drop_empty_cells: bool = False,
    n_top_genes: int | None = N_TOP_GENES,
    min_cells: int = MIN_CELLS,
    genes: list[str] | None = None,
    select: bool = True,
    recover: bool = True,
    seed: int = 0,
) -> Prepared:
    """Validate and normalise ``adata`` for training, and choose the genes to model.

    Parameters
    ----------
    adata
        AnnData or ``.h5ad`` path. Raw counts are preferred; log-normalised values
        (``log1p`` of 1e4-normalised counts) are accepted. Sparse matrices stay
        sparse: only the modelled genes are ever dense.
    labels
        ``obs`` columns to encode as conditions.
    layer
        Matrix to use. Default: ``layers['counts']`` if present, else ``X``.
    drop_empty_cells
        Cells with no counts are refused unless this is True, in which case they are
        dropped with a warning.
    n_top_genes, min_cells, genes
        Which genes the networks learn (:func:`cellsynth.data.genes.choose_genes`):
        genes detected in at least ``min_cells`` cells, at most ``n_top_genes`` highly
        variable ones of them, or exactly ``genes``.
    recover
        Log-normalised UMI counts (``log1p`` of 1e4-normalised whole counts, e.g. a Seurat
        ``data`` slot) are turned back into their exact counts
        (:func:`cellsynth.data.recover.recover_counts`) and modelled as counts.
    select
        ``False``: model every gene as given (no choice, no per-gene model of the rest).
    seed
        Seed of the cell subsample that ranks highly variable genes on big data.

    Examples
    --------
    >>> import scanpy as sc
    >>> p = prepare(sc.datasets.pbmc3k(), labels=None)  # doctest: +SKIP
    >>> p.choice.summary()  # doctest: +SKIP
    {'n_genes': 32738, 'n_modelled': 2000, 'method': 'hvg', 'n_top_genes': 2000, 'min_cells': 3}
    """
    adata = read(adata)
    labels = list(labels or [])
    if layer is None:
        layer = "counts" if "counts" in adata.layers else None
    if layer is not None and layer not in adata.layers:
        raise InputError(f"Layer {layer!r} is not in adata.layers (available: {list(adata.layers) or 'none'}).")
    m = adata.layers[layer] if layer is not None else adata.X
    where = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    if m is None:
        raise InputError(f"{where} is missing; store the expression matrix there.")
    validate_matrix(m, where)
    check_unique_genes(adata.var_names)
    kind = detect_kind(m)
    if kind == "lognorm":
        check_log_range(float(_values(m).max()), where)
    m = _rows(m)
    keep = usable_cells(_row_sums(m), drop_empty_cells)
    if not keep.all():
        m = m[keep]
    if kind == "lognorm" and recover:
        counts = recover_counts(m)
        if counts is not None:
            log.info(
                "%s holds log-normalised UMI counts: each cell's values are whole multiples of its smallest one, so the "
                "counts were recovered exactly and are modelled as counts (pass recover_counts=False to model the "
                "values as given)", where,
            )
            m, kind = counts, "counts"
    codes, cats = encode_labels(adata.obs.loc[keep], labels)
    names = [str(g) for g in adata.var_names]
    if select:
        choice = choose_genes(m, names, kind, n_top_genes=n_top_genes, min_cells=min_cells, genes=genes, seed=seed)
    else:
        choice = GeneChoice(np.arange(len(names), dtype=np.int64), len(names), "all", None, 0)
    sub = m if choice.all_modelled else m[:, choice.modelled]
    x = _dense32(sub)  # the only dense matrix: cells x modelled genes
    totals = _row_sums(sub)
    del sub
    if not choice.all_modelled and (totals <= 0).any():
        empty = totals <= 0
        log.warning(
            "dropping %d cell(s) with no counts in the %d modelled genes (they are still counted in the "
            "unmodelled genes' statistics); model more genes (--n-top-genes) to keep them", int(empty.sum()), x.shape[1],
        )
        if (~empty).sum() < 2:
            raise InputError("Fewer than 2 cells have counts in the modelled genes; model more genes (n_top_genes=None).")
    else:
        empty = np.zeros(len(totals), bool)
    rest_genes = None
    if not choice.all_modelled:
        rest_genes = np.setdiff1d(np.arange(len(names)), choice.modelled)
        log.info(
            "modelling %d of %d genes (%s: detected in >= %d cells%s); the other %d come from a per-gene model",
            len(choice.modelled), len(names), choice.method, choice.min_cells,
            f", top {choice.n_top_genes} highly variable" if choice.method == "hvg" else "", len(rest_genes),
        )
    rows = np.flatnonzero(keep)[~empty]
    if empty.any():
        x, totals = x[~empty], totals[~empty]
        codes = {c: v[~empty] for c, v in codes.items()}
    if kind == "counts":
        log.info("%s holds raw counts (%d cells x %d genes); normalising to 1e4 per cell + log1p", where, x.shape[0], len(names))
        counts = x
        x_log = np.empty_like(x)
        for s0 in range(0, len(x), ROWS):  # float64 arithmetic, a block of rows at a time
            x_log[s0 : s0 + ROWS] = normalise_log(x[s0 : s0 + ROWS].astype(np.float64))
        library = totals.astype(np.float32)
    else:
        log.info(
            "%s holds non-integer values: treating them as log-normalised (log1p of 1e4-normalised counts); "
            "generated cells will have no counts layer. Pass raw counts for count-level output.",
            where,
        )
        counts = None
        x_log = x
        library = np.full(x.shape[0], TARGET_SUM, np.float32)
    return Prepared(
        genes=[names[i] for i in choice.modelled],
        x_log=x_log,
        counts=counts,
        library=library,
        input_kind=kind,
        labels=codes,
        categories=cats,
        obs_names=[str(o) for o in adata.obs_names[rows]],
        all_genes=names,
        choice=choice,
        rest_genes=rest_genes,
        rest_matrix=m if rest_genes is not None else None,
        rest_rows=np.flatnonzero(~empty) if rest_genes is not None else None,
        var=adata.var.copy(),
    )
