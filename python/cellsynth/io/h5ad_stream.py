"""Chunked ``.h5ad`` reading and writing, so nothing has to hold a whole atlas in memory.

:class:`H5adWriter` appends CSR row blocks to ``X`` (and to named layers) of an
``.h5ad`` with anndata's own on-disk sparse datasets, writes ``obs``/``var``/``uns``
at the end, and renames a temporary file into place only when everything is written:
an interrupted write leaves no half-written output. :class:`RowReader` reads row
blocks of a backed matrix (CSR or dense) as dense float32.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .files import publish


#: elements per HDF5 chunk of the growing CSR arrays
CHUNK_ELEMENTS = 1 << 16


class H5adWriter:
    """Write an ``.h5ad`` row block by row block.

    Examples
    --------
    >>> with H5adWriter("out.h5ad", genes=["a", "b"], layers=["counts"]) as w:  # doctest: +SKIP
    ...     w.append(x_block, counts=count_block)
    ...     w.finish(obs=obs_df, uns={"cellsynth": {...}})
    """

    def __init__(self, path: str | os.PathLike, genes: list[str], layers: list[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cellsynth-", suffix=".h5ad", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.genes = [str(g) for g in genes]
        self.layers = list(layers)
        self.n_obs = 0
        self.finished = False
        self.file = h5py.File(self.tmp, "w")
        empty = sp.csr_matrix((0, len(self.genes)), dtype=np.float32)
        # explicit chunks: h5py would size them from the empty first block (1 element for
        # indptr, 1,024 for data), and a million cells would then need a million chunks
        # whose index alone costs gigabytes to read back
        kw = {"chunks": (CHUNK_ELEMENTS,)}
        ad.io.write_elem(self.file, "X", empty, dataset_kwargs=kw)
        grp = self.file.create_group("layers")
        for name in self.layers:
            ad.io.write_elem(grp, name, empty, dataset_kwargs=kw)

    def __enter__(self) -> "H5adWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.finished:
            self.abort()

    def append(self, x, **layers) -> None:
        """Append a block of rows to ``X`` and to each layer (sparse or dense arrays)."""
        if sorted(layers) != sorted(self.layers):
            raise ValueError(f"append needs exactly the layers {self.layers}, got {sorted(layers)}.")
        n = x.shape[0]
        for key, block in [("X", x), *((f"layers/{k}", v) for k, v in layers.items())]:
            if block.shape != (n, len(self.genes)):
                raise ValueError(f"{key} block has shape {block.shape}; expected ({n}, {len(self.genes)}).")
            ad.io.sparse_dataset(self.file[key]).append(sp.csr_matrix(block, dtype=np.float32))
        self.n_obs += n

    def finish(self, obs: pd.DataFrame, uns: dict | None = None, var: pd.DataFrame | None = None) -> Path:
        """Write the annotations, close, and move the file into place."""
        if len(obs) != self.n_obs:
            raise ValueError(f"obs has {len(obs)} rows but {self.n_obs} cells were written.")
        var = pd.DataFrame(index=pd.Index(self.genes)) if var is None else var
        ad.io.write_elem(self.file, "obs", obs)
        ad.io.write_elem(self.file, "var", var)
        ad.io.write_elem(self.file, "uns", dict(uns or {}))
        for g in ("obsm", "varm", "obsp", "varp"):
            ad.io.write_elem(self.file, g, {})
        self.file.close()
        publish(self.tmp, self.path)
        self.finished = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (the target path is left untouched)."""
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class RowReader:
    """Dense float32 row blocks of ``X`` or ``layers[layer]`` of an ``.h5ad`` (or an
    anndata ``.zarr`` store) on disk.

    CSR and dense matrices are read block by block; CSC is refused (reading rows of
    it reads the whole matrix) with the fix in the message.
    """

    def __init__(self, path: str | os.PathLike, layer: str | None = None):
        self.path = os.fspath(path)
        if self.path.rstrip("/").endswith(".zarr"):
            import zarr

            self.file = zarr.open_group(self.path, mode="r")
        else:
            try:
                self.file = h5py.File(self.path, "r")
            except OSError as e:
                raise InputError(
                    f"{self.path!r} could not be opened as .h5ad ({str(e)[:120]}): the file is truncated, damaged "
                    "or in another format. Re-export it with adata.write_h5ad(...)."
                ) from e
        key = "X" if layer is None else f"layers/{layer}"
        if key not in self.file:
            have = list(self.file["layers"]) if "layers" in self.file else []
            self.close()
            raise InputError(f"{self.path} has no {key!r} (layers: {have or 'none'}).")
        self.where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        node = self.file[key]
        enc = node.attrs.get("encoding-type", "")
        if enc == "csc_matrix":
            self.close()
            raise InputError(
                f"{self.where} in {self.path} is stored as CSC: reading cells from it would read the whole "
                "matrix. Rewrite it as CSR (adata.X = adata.X.tocsr(); adata.write_h5ad(...))."
            )
        self.sparse = enc == "csr_matrix"
        self.matrix = ad.io.sparse_dataset(node) if self.sparse else node
        self.shape = tuple(self.matrix.shape)

    def block(self, start: int, stop: int):
        """Rows ``[start, stop)`` as stored: CSR for sparse matrices, an array for dense."""
        return self.matrix[start:stop]

    def rows(self, start: int, stop: int) -> np.ndarray:
        block = self.matrix[start:stop]
        if sp.issparse(block):
            return block.toarray().astype(np.float32, copy=False)
        return np.asarray(block, dtype=np.float32)

    def stored_values(self, start: int, stop: int) -> np.ndarray:
        """The stored values of a row block (non-zeros for CSR), for cheap checks."""
        block = self.matrix[start:stop]
        return np.asarray(block.data if sp.issparse(block) else block)

    def read_obs(self) -> pd.DataFrame:
        return ad.io.read_elem(self.file["obs"])

    def read_var(self) -> pd.DataFrame:
        return ad.io.read_elem(self.file["var"])

    def close(self) -> None:
        if hasattr(self.file, "close"):  # zarr groups hold no handle
            self.file.close()

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
