"""The balanced latent shift between two levels of a label column (scGen's vector
arithmetic; see :mod:`cellsynth.tl.perturb`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError


@dataclass
class LatentShift:
    """The condition's latent shift and the groups it was learned from."""

    column: str
    control: str
    target: str
    delta: np.ndarray
    groups: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"LatentShift({self.column}: {self.control!r} -> {self.target!r}, |δ| = {np.linalg.norm(self.delta):.3f}, "
            f"from {len(self.groups)} group(s))"
        )


def column_and_levels(model: CellSynth, condition: dict[str, str], control: str | None) -> tuple[str, str, str]:
    if not isinstance(condition, dict) or len(condition) != 1:
        raise InputError(f"condition must name one column and its target level, e.g. {{'treatment': 'stim'}}; got {condition!r}.")
    (col, target), = condition.items()
    target = str(target)
    model.condition_codes({col: target})  # unknown column/level or too few cells: clear error
    levels = model.categories[col]
    if control is None:
        others = [v for v in levels if v != target]
        if len(others) != 1:
            raise InputError(f"Column {col!r} has levels {levels}; say which one the cells are in with control=.")
        control = others[0]
    control = str(control)
    if control == target:
        raise InputError(f"control and target are both {target!r}.")
    model.condition_codes({col: control})
    return col, control, target


def latent_shift(model: CellSynth, condition: dict[str, str], *, control: str | None = None) -> LatentShift:
    """The balanced latent shift from ``control`` to the target level of ``condition``.

    Examples
    --------
    >>> latent_shift(m, {"condition": "stimulated"})  # doctest: +SKIP
    LatentShift(condition: 'control' -> 'stimulated', |δ| = 1.234, from 3 group(s))
    """
    model.check_trained()
    col, control, target = column_and_levels(model, condition, control)
    j = model.labels.index(col)
    c_code, t_code = model.categories[col].index(control), model.categories[col].index(target)
    minimum = model.hparams.min_cells_per_label
    by_group: dict[tuple, dict[int, tuple[torch.Tensor, int]]] = {}
    for key, mean in zip(model.combinations, model.combination_means):
        codes, n = key[:-1], key[-1]
        other = tuple(c for i, c in enumerate(codes) if i != j)
        by_group.setdefault(other, {})[codes[j]] = (mean, n)
    diffs, groups = [], []
    for other, levels in by_group.items():
        if c_code in levels and t_code in levels and min(levels[c_code][1], levels[t_code][1]) >= minimum:
            diffs.append(levels[t_code][0] - levels[c_code][0])
            names = {c: model.categories[c][code] for c, code in zip([c for c in model.labels if c != col], other)}
            groups.append({**names, "n_control": levels[c_code][1], "n_target": levels[t_code][1]})
    if not diffs:
        raise InputError(
            f"No group of the other label columns has at least {minimum} training cells of both "
            f"{col}={control!r} and {col}={target!r}; the shift cannot be learned."
        )
    delta = torch.stack(diffs).mean(0).cpu().numpy()
    return LatentShift(col, control, target, delta, groups)
