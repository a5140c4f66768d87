"""Training checkpoints, so an interrupted ``cellsynth train`` picks up where it stopped.

A checkpoint is a model-format directory (``config.json`` + safetensors + gene list,
checksummed, no pickles): network, optimiser and EMA tensors, RNG states as uint8
tensors, and the loop counters as JSON. Each save goes to a new ``ckpt-NNNNNN``
directory before the older ones are removed, so a kill at any moment leaves at
least one complete checkpoint; :meth:`Checkpoints.latest` skips damaged ones.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from .checkpoint import ModelFileError, load_model, save_model

log = logging.getLogger("cellsynth")


def flatten_optimizer(prefix: str, state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser ``state_dict`` as (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.state.{pid}.{name}"] = v
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    head = prefix + ".state."
    for k, v in tensors.items():
        if k.startswith(head):
            pid, name = k[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta.get("scalars", {}).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


class Checkpoints:
    """Numbered checkpoints in one directory; only the newest is kept.

    Examples
    --------
    >>> ck = Checkpoints("run/checkpoints")  # doctest: +SKIP
    >>> ck.save({"w": torch.zeros(2)}, {"stage": "encoder", "epoch": 3}, genes)  # doctest: +SKIP
    >>> tensors, meta = ck.latest()  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    def _existing(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))

    def save(self, tensors: dict[str, torch.Tensor], meta: dict, genes: list[str]) -> Path:
        old = self._existing()
        seq = int(old[-1].name.split("-")[1]) + 1 if old else 0
        self.dir.mkdir(parents=True, exist_ok=True)
        path = save_model(self.dir / f"ckpt-{seq:06d}", {"checkpoint": meta}, tensors, genes)
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
        return path

    def latest(self) -> tuple[dict[str, torch.Tensor], dict, list[str]] | None:
        """The newest loadable checkpoint, or None when there is none."""
        for p in reversed(self._existing()):
            try:
                cfg, tensors, genes = load_model(p)
            except ModelFileError as e:
                log.warning("skipping damaged checkpoint %s: %s", p, e)
                continue
            return tensors, cfg["checkpoint"], genes
        return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}


def restore_rng(generator: torch.Generator, tensors: dict[str, torch.Tensor]) -> None:
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
