"""Condition requests: validate ``{"column": "value"}`` against a model's labels and
turn them into label codes; plan per-condition generation at training proportions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ..data.cluster import leiden_clusters
from ..errors import InputError

log = logging.getLogger("cellsynth")


def _listing(values: list[str], limit: int = 25) -> str:
    shown = ", ".join(map(repr, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def resolve_conditions(
    conditions: Mapping[str, object] | None,
    labels: list[str],
    categories: dict[str, list[str]],
    label_counts: dict[str, dict[str, int]],
    min_cells: int,
) -> dict[str, int]:
    """Check a request and return ``{column: code}``.

    Raises :class:`~cellsynth.data.intake.InputError` naming the valid columns or
    values for an unknown one, and the minimum for a label with too few training cells.
    """
    if not conditions:
        return {}
    if not labels:
        raise InputError(
            "This model was trained without condition columns, so it cannot generate by condition. "
            "Retrain with labels=[...] (cellsynth train --label COLUMN)."
        )
    out = {}
    for col, value in conditions.items():
        if col not in categories:
            raise InputError(f"Unknown condition column {col!r}. This model knows: {_listing(labels)}.")
        value = str(value)
        if value not in categories[col]:
            raise InputError(f"Unknown value {value!r} for condition column {col!r}. Valid values: {_listing(categories[col])}.")
        n = int(label_counts.get(col, {}).get(value, min_cells))
        if n < min_cells:
            raise InputError(
                f"{col}={value!r} had only {n} training cell(s); at least {min_cells} are needed to learn a label "
                f"(hyper-parameter min_cells_per_label). Retrain with more cells of this label."
            )
        out[col] = categories[col].index(value)
    return out


def parse_condition_args(pairs: list[str] | None) -> dict[str, str]:
    """``["cell_type=B", "tissue=lung"]`` -> ``{"cell_type": "B", "tissue": "lung"}``."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise InputError(f"--condition expects COLUMN=VALUE, got {p!r}.")
        k, v = p.split("=", 1)
        if k in out:
            raise InputError(f"--condition {k}=... given twice.")
        out[k.strip()] = v
    return out


def proportional_plan(n: int, combos: list[tuple[tuple[int, ...], int]], seed: int = 0) -> list[tuple[tuple[int, ...], int]]:
    """Split ``n`` cells over label combinations in proportion to their training counts.

    Largest-remainder rounding (ties broken by ``seed``), so the parts sum to ``n``.
    """
    total = sum(c for _, c in combos)
    if total <= 0:
        raise ValueError("no training cells to take proportions from")
    exact = np.array([n * c / total for _, c in combos])
    base = np.floor(exact).astype(int)
    rest = n - int(base.sum())
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(combos)), -(exact - base)))
    base[order[:rest]] += 1
    return [(key, int(k)) for (key, _), k in zip(combos, base) if k > 0]


def label_summary(labels: list[str], codes: dict[str, np.ndarray], categories: dict[str, list[str]]) -> tuple[dict, list]:
    """Training cells per label (``{column: {value: n}}``) and per label combination
    (``[[code, ..., n], ...]``, sorted by codes)."""
    counts = {
        c: {name: int(k) for name, k in zip(categories[c], np.bincount(codes[c], minlength=len(categories[c])))}
        for c in labels
    }
    if not labels:
        return counts, []
    keys, k = np.unique(np.stack([codes[c] for c in labels], 1), axis=0, return_counts=True)
    return counts, [[*map(int, key), int(n)] for key, n in zip(keys, k)]


def plan(model, n: int, conditions, per_condition: bool) -> list[tuple[dict[str, int], int]]:
    """``[(codes, n_cells), ...]``: the request split by condition (training proportions
    with ``per_condition``)."""
    hp = model.hparams
    if not per_condition:
        return [(model.condition_codes(conditions), n)]
    if conditions:
        raise InputError("Give either conditions or per_condition=True, not both.")
    if not model.labels:
        raise InputError("per_condition needs a model trained with condition columns (labels=[...]).")
    usable, skipped = [], []
    for *key, count in model.combinations:
        names = [model.categories[c][k] for c, k in zip(model.labels, key)]
        if all(model.label_counts[c][v] >= hp.min_cells_per_label for c, v in zip(model.labels, names)):
            usable.append((tuple(key), count))
        else:
            skipped.append("/".join(names))
    if skipped:
        log.warning("per_condition: skipping label(s) with fewer than %d training cells: %s", hp.min_cells_per_label, ", ".join(skipped))
    return [({c: k for c, k in zip(model.labels, key)}, m) for key, m in proportional_plan(n, usable)]


def add_clusters(d, resolution: float, seed: int) -> str | None:
    """Add Leiden clusters of the cells as a label column of ``d`` (SCLD's
    pre-guidance); returns the column's name, or None with too few cells."""
    name = "cluster" if "cluster" not in d.labels else "cellsynth_cluster"
    if d.x_log.shape[0] < 10:
        log.warning("too few cells (%d) to cluster; training without cluster conditions", d.x_log.shape[0])
        return None
    found = leiden_clusters(d.x_log, resolution=resolution, seed=seed)
    cats = sorted(set(found), key=lambda v: (len(v), v))
    d.labels[name] = np.asarray([cats.index(v) for v in found], dtype=np.int64)
    d.categories[name] = cats
    log.info("conditioning on %d Leiden clusters (column %r)", len(cats), name)
    return name


def condition_tensor(model, n: int, codes: dict[str, int]):
    """Per-cell condition codes (n, columns), the null token for columns not asked for;
    None for a model without labels."""
    if not model.labels:
        return None
    c = model.denoiser.null_condition(n, model.device)
    for j, col in enumerate(model.labels):
        if col in codes:
            c[:, j] = codes[col]
    return c
