"""The acceptance split: pbmc68k_reduced counts, halves stratified by bulk_labels."""

from __future__ import annotations

from sklearn.model_selection import train_test_split

from cellsynth.data import pbmc68k_counts


def pbmc_halves(seed: int = 0):
    adata = pbmc68k_counts()
    tr, te = train_test_split(
        adata.obs_names, test_size=0.5, stratify=adata.obs["bulk_labels"], random_state=seed
    )
    return adata[tr].copy(), adata[te].copy()
