"""Condition requests: validate ``{"column": "value"}`` against a model's labels and
turn them into label codes; plan per-condition generation at training proportions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InputError


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
