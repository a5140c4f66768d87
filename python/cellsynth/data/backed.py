"""Training data read from an ``.h5ad`` on disk, in shuffled blocks of cells.

:func:`prepare_backed` checks a file chunk by chunk (the same refusals as
:func:`~cellsynth.data.intake.prepare`: NaN/inf, negative values, empty matrix,
cells with zero counts, unknown label columns) and keeps only per-cell scalars in
memory (library size, label codes). :meth:`BackedData.batches` then reads contiguous
blocks of rows in random order, pools a few blocks (kept sparse), shuffles the pooled
cells and cuts them into minibatches; only a minibatch is ever dense. Blocks are dealt out across
distributed ranks, so each process reads its own shard.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..progress import progress
from ..io.h5ad_stream import RowReader
from .genes import HVG_CELLS, MIN_CELLS, N_TOP_GENES, GeneChoice, add_sums, choose_genes, empty_sums
from .intake import (
    TARGET_SUM,
    InputError,
    check_log_range,
    check_not_empty,
    check_unique_genes,
    detect_kind,
    prepare,
    encode_labels,
    normalise_log,
    usable_cells,
    validate_matrix,
)

log = logging.getLogger("cellsynth")

#: cells per contiguous read
BLOCK = 1024
#: blocks pooled and shuffled together
POOL_BLOCKS = 16
#: at most this many cells are held out for validation
MAX_VALIDATION_CELLS = 20_000


@dataclass
class BackedData:
    """A checked ``.h5ad`` on disk plus the per-cell scalars training needs."""

    path: str
    layer: str | None
    all_genes: list[str]  # every gene of the file, in its order
    input_kind: str
    library: np.ndarray  # per file row, over the modelled genes (0 for dropped rows)
    keep: np.ndarray  # per file row: usable
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # column -> codes of kept rows
    categories: dict[str, list[str]] = field(default_factory=dict)
    block: int = BLOCK
    var: object = None  # the file's gene annotations (a DataFrame)
    gene_choice: GeneChoice | None = None  # None: every gene is modelled
    #: the in-memory path's matrix of the unmodelled genes; out of core they are read block by block
    rest_matrix = rest_rows = None

    @property
    def choice(self) -> GeneChoice:
        if self.gene_choice is None:
            return GeneChoice(np.arange(len(self.all_genes), dtype=np.int64), len(self.all_genes), "all", None, 0)
        return self.gene_choice

    @property
    def genes(self) -> list[str]:
        """The modelled genes."""
        return [self.all_genes[i] for i in self.choice.modelled]

    @property
    def modelled(self) -> np.ndarray | None:
        """Columns of the modelled genes, or None when every gene is modelled."""
        return None if self.choice.all_modelled else self.choice.modelled

    @property
    def rest_genes(self) -> np.ndarray | None:
        c = self.choice
        return None if c.all_modelled else np.setdiff1d(np.arange(c.n_genes), c.modelled)

    @property
    def n_rows(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.keep.sum())

    def reader(self) -> RowReader:
        return RowReader(self.path, self.layer)

    def blocks(self) -> np.ndarray:
        """Start rows of the contiguous blocks."""
        return np.arange(0, self.n_rows, self.block)

    def split_blocks(self, val_fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random train/validation split of the blocks (validation capped at
        :data:`MAX_VALIDATION_CELLS` cells)."""
        starts = self.blocks()
        if val_fraction <= 0 or len(starts) < 4:
            return starts, starts[:0]
        n_val = max(1, min(int(round(len(starts) * val_fraction)), math.ceil(MAX_VALIDATION_CELLS / self.block)))
        perm = torch.randperm(len(starts), generator=generator).numpy()
        return np.sort(starts[perm[n_val:]]), np.sort(starts[perm[:n_val]])

    def read(self, reader: RowReader, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(log-normalised x, counts or None, library) of the kept rows among file rows ``[start, stop)``."""
        block, lib = self.read_sparse(reader, start, stop)
        m = block.toarray()
        if self.input_kind == "counts":
            return normalise_log(m).astype(np.float32), m, lib
        return m, None, lib

    def batches(
        self,
        reader: RowReader,
        starts: np.ndarray,
        batch_size: int,
        n_batches: int,
        generator: torch.Generator,
        *,
        order_generator: torch.Generator | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        """``n_batches`` shuffled minibatches ``(x, counts, library)`` from this rank's share
        of the blocks ``starts`` (re-shuffled and re-dealt when a share runs out).

        ``order_generator`` deals the blocks and must be seeded alike on every rank;
        ``generator`` shuffles cells within a pool (default: one generator for both)."""
        order_generator = generator if order_generator is None else order_generator
        made = 0
        while made < n_batches:
            order = starts[torch.randperm(len(starts), generator=order_generator).numpy()][rank::world]
            if len(order) == 0:
                raise InputError(f"Too few blocks of cells ({len(starts)}) for {world} processes; use fewer processes.")
            for i in range(0, len(order), POOL_BLOCKS):
                # the pool stays sparse; only a minibatch is ever dense
                parts = [self.read_sparse(reader, s, min(s + self.block, self.n_rows)) for s in order[i : i + POOL_BLOCKS]]
                pool = sp.vstack([p[0] for p in parts], format="csr")
                lib = np.concatenate([p[1] for p in parts])
                perm = torch.randperm(pool.shape[0], generator=generator).numpy()
                for j in range(0, len(perm) - 1, batch_size):
                    ix = perm[j : j + batch_size]
                    if len(ix) < 2:
                        continue
                    m = pool[ix].toarray()
                    if self.input_kind == "counts":
                        yield normalise_log(m).astype(np.float32, copy=False), m, lib[ix]
                    else:
                        yield m, None, lib[ix]
                    made += 1
                    if made >= n_batches:
                        return

    def read_sparse(self, reader: RowReader, start: int, stop: int, columns: np.ndarray | None = None
                    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """(CSR float32 values over the modelled genes, or ``columns``; library) of the
        kept rows among file rows ``[start, stop)``."""
        keep = self.keep[start:stop]
        block = sp.csr_matrix(reader.block(start, stop), dtype=np.float32)
        block = block[keep] if not keep.all() else block
        columns = self.modelled if columns is None else columns
        return (block if columns is None else block[:, columns]), self.library[start:stop][keep]

    def random_cells(self, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`read` of whole blocks in random order (``rng``) until at least ``budget``
        kept cells (or every block) are read, concatenated: (x, counts or None, library)."""
        starts, parts, at = self.blocks(), [], 0
        with self.reader() as r:
            for i in rng.permutation(len(starts)):
                parts.append(self.read(r, int(starts[i]), min(int(starts[i]) + self.block, self.n_rows)))
                at += len(parts[-1][0])
                if at >= budget:
                    break
        x, counts, lib = zip(*parts)
        return np.concatenate(x), (None if counts[0] is None else np.concatenate(counts)), np.concatenate(lib)

    def rest_sums(self, state: np.ndarray, n_states: int, progress_bar: bool = False) -> dict:
        """Per-state sums of the unmodelled genes over the kept cells (file order; ``state``:
        one code per kept cell), read block by block (:func:`~cellsynth.data.genes.add_sums`)."""
        rest = self.rest_genes
        out = empty_sums(n_states, len(rest))
        at = 0
        with self.reader() as r:
            for s in progress(self.blocks(), desc="unmodelled genes", disable=not progress_bar):
                block, _ = self.read_sparse(r, s, min(s + self.block, self.n_rows), columns=rest)
                add_sums(out, block, state[at : at + block.shape[0]])
                at += block.shape[0]
        return out

    def n_cells_in(self, starts: np.ndarray) -> int:
        return int(sum(self.keep[s : s + self.block].sum() for s in starts))


def prepare_backed(
    path: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    layer: str | None = None,
    drop_empty_cells: bool = False,
    chunk_size: int = 10_000,
    progress_bar: bool = True,
    n_top_genes: int | None = N_TOP_GENES,
    min_cells: int = MIN_CELLS,
    genes: list[str] | None = None,
    seed: int = 0,
) -> BackedData:
    """Check an ``.h5ad`` chunk by chunk and keep what training needs, never the matrix.

    The genes to model are chosen as in memory (:func:`~cellsynth.data.genes.choose_genes`):
    detections are counted over every cell of the file while it is checked, and the
    highly variable genes are ranked on at most :data:`~cellsynth.data.genes.HVG_CELLS`
    random cells collected in the same pass (all of them in smaller files, so the choice
    is the in-memory one). A second pass then sums each cell's modelled genes.

    Examples
    --------
    >>> d = prepare_backed("atlas.h5ad", labels=["cell_type"])  # doctest: +SKIP
    >>> d.n_cells, d.input_kind  # doctest: +SKIP
    (1000000, 'counts')
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"No such file: {path!r}. Pass the path of an existing .h5ad file.")
    if not path.rstrip("/").endswith((".h5ad", ".zarr")):
        raise InputError(f"{path!r} is neither .h5ad nor .zarr; out-of-core training reads those (CSR or dense X).")
    with RowReader(path) as probe:
        has_counts = "layers" in probe.file and "counts" in probe.file["layers"]
    if layer is None and has_counts:
        layer = "counts"
    labels = list(labels or [])
    with RowReader(path, layer) as r:
        n, g = r.shape
        check_not_empty(r.shape, r.where)
        var, obs = r.read_var(), r.read_obs()
        check_unique_genes(var.index)
        missing = [c for c in labels if c not in obs.columns]
        if missing:
            encode_labels(obs, missing)  # raises the intake's message
        kind, totals = "counts", np.empty(n, np.float64)
        ranking = genes is None and n_top_genes is not None and g > int(n_top_genes)  # HVGs ranked on a sample
        choosing = ranking or genes is not None or n_top_genes is None
        detected = np.zeros(g, np.int64)
        sample_rows = np.arange(n) if n <= HVG_CELLS else np.sort(np.random.default_rng(seed).choice(n, HVG_CELLS, replace=False))
        sample = []
        for start in progress(range(0, n, chunk_size), desc="checking", disable=not progress_bar):
            block = r.matrix[start : start + chunk_size]
            validate_matrix(block, f"{r.where} (cells {start}-{start + block.shape[0] - 1})")
            if kind == "counts" and detect_kind(block) != "counts":
                kind = "lognorm"
            if kind == "lognorm" and (block.data if sp.issparse(block) else np.asarray(block)).size:
                check_log_range(float((block.data if sp.issparse(block) else np.asarray(block)).max()), r.where)
            totals[start : start + block.shape[0]] = np.asarray(block.sum(1)).ravel()
            if choosing:
                block = sp.csr_matrix(block, dtype=np.float32)
                detected += np.bincount(block.indices[block.data != 0], minlength=g)
                if ranking:
                    lo, hi = np.searchsorted(sample_rows, [start, start + block.shape[0]])
                    sample.append(block[sample_rows[lo:hi] - start])
        where = r.where
    keep = usable_cells(totals, drop_empty_cells)
    choice = None
    if choosing:
        names = [str(x) for x in var.index]
        m = sp.vstack(sample, format="csr")[keep[sample_rows]] if ranking else sp.csr_matrix((0, g), dtype=np.float32)
        choice = choose_genes(m, names, kind, n_top_genes=n_top_genes, min_cells=min_cells, genes=genes, seed=seed,
                              detected=detected)
        del m, sample
        if not choice.all_modelled:
            totals = modelled_totals(path, layer, choice.modelled, n, chunk_size, progress_bar)
            empty = keep & (totals <= 0)
            if empty.any():
                log.warning("dropping %d cell(s) with no counts in the %d modelled genes; model more genes "
                            "(--n-top-genes) to keep them", int(empty.sum()), len(choice.modelled))
                keep &= ~empty
                if keep.sum() < 2:
                    raise InputError("Fewer than 2 cells have counts in the modelled genes; model more genes (n_top_genes=None).")
            log.info("modelling %d of %d genes (%s: detected in >= %d cells%s); the other %d come from a per-gene model",
                     len(choice.modelled), g, choice.method, choice.min_cells,
                     f", top {choice.n_top_genes} highly variable" if choice.method == "hvg" else "", g - len(choice.modelled))
    codes, cats = encode_labels(obs.loc[keep], labels)
    if kind == "counts":
        library = np.where(keep, totals, 0).astype(np.float32)
        log.info("%s holds raw counts (%d cells x %d genes, read from disk in blocks)", where, n, g)
    else:
        library = np.where(keep, TARGET_SUM, 0).astype(np.float32)
        log.info("%s holds non-integer values: treating them as log-normalised; no counts layer in generated cells", where)
    return BackedData(
        path=path,
        layer=layer,
        all_genes=[str(x) for x in var.index],
        var=var,
        input_kind=kind,
        library=library,
        keep=keep,
        labels=codes,
        categories=cats,
        block=max(16, min(BLOCK, math.ceil(n / 20))),
        gene_choice=choice,
    )


def modelled_totals(path: str, layer: str | None, modelled: np.ndarray, n: int, chunk_size: int, progress_bar: bool) -> np.ndarray:
    """Each row's sum over the ``modelled`` columns, read chunk by chunk."""
    totals = np.empty(n, np.float64)
    with RowReader(path, layer) as r:
        for start in progress(range(0, n, chunk_size), desc="library sizes", disable=not progress_bar):
            block = sp.csr_matrix(r.matrix[start : start + chunk_size], dtype=np.float64)
            totals[start : start + block.shape[0]] = np.asarray(block[:, modelled].sum(1)).ravel()
    return totals


def prepare_any(adata, *, labels=None, layer=None, drop_empty_cells=False, backed=False, progress_bar=True, seed=0, **genes):
    """:func:`prepare` (cells in memory) or, with ``backed=True``, :func:`prepare_backed`
    (cells read from an ``.h5ad`` path block by block). ``genes``:
    :func:`prepare`'s gene choice (``n_top_genes``, ``min_cells``, ``genes``)."""
    if not backed:
        return prepare(adata, labels=labels, layer=layer, drop_empty_cells=drop_empty_cells, seed=seed, **genes)
    if not isinstance(adata, (str, os.PathLike)):
        raise InputError("backed=True reads cells from disk: pass the .h5ad path, not an in-memory AnnData.")
    genes.pop("recover", None)  # out-of-core data is modelled as stored
    return prepare_backed(adata, labels=labels, layer=layer, drop_empty_cells=drop_empty_cells, progress_bar=progress_bar,
                          seed=seed, **genes)
