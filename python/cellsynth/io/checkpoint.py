"""Model files: ``config.json`` + ``weights.safetensors`` + ``genes.txt``.

No pickles, ever: tensors are read with safetensors (which cannot run code) and
everything else is JSON. ``config.json`` records the SHA-256 of the other two files and of itself;
a tampered or partial file fails to load with a clear error. Files are written to a
temporary directory beside the target and moved into place, so an interrupted save
leaves no half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ModelFileError
from .files import publish

FORMAT = "cellsynth-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, GENES = "config.json", "weights.safetensors", "genes.txt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_digest(cfg: dict) -> str:
    """SHA-256 of ``config.json``'s content without its own checksum (canonical JSON)."""
    body = {k: v for k, v in cfg.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_model(directory: str | os.PathLike, config: dict, tensors: dict[str, torch.Tensor], genes: list[str], *, overwrite: bool = False) -> Path:
    """Write a model directory atomically."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; choose a directory path for the model.")
    if out.exists() and any(out.iterdir()):
        if not (out / CONFIG).exists():
            raise FileExistsError(f"{out} exists and is not a cellsynth model directory; choose an empty or new directory.")
        if not overwrite:
            raise FileExistsError(f"{out} already holds a model; pass overwrite=True (--overwrite) to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cellsynth-", dir=out.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / GENES).write_text("\n".join(genes) + "\n", encoding="utf-8")
        cfg = dict(config)
        cfg["format"] = FORMAT
        cfg["format_version"] = FORMAT_VERSION
        cfg["files"] = {WEIGHTS: _sha256(tmp / WEIGHTS), GENES: _sha256(tmp / GENES)}
        cfg["config_sha256"] = config_digest(cfg)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """Read and verify a model directory; returns ``(config, tensors, genes)``."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelFileError(f"{d} is not a directory; pass the directory written by CellSynth.save / cellsynth train.")
    for name in (CONFIG, WEIGHTS, GENES):
        if not (d / name).is_file():
            raise ModelFileError(f"{d} is missing {name}: the model is incomplete. Re-save or re-train it.")
    try:
        cfg = json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{d / CONFIG} is not valid JSON ({e}); the file is damaged.") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFileError(f"{d / CONFIG} is not a cellsynth model config.")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{d} was written with model format {cfg.get('format_version')}; this cellsynth reads {FORMAT_VERSION}.")
    if "config_sha256" in cfg and cfg["config_sha256"] != config_digest(cfg):
        raise ModelFileError(f"{d / CONFIG} does not match its own checksum: it was edited or is damaged. Refusing to load it.")
    files = cfg.get("files", {})
    for name in (WEIGHTS, GENES):
        want = files.get(name)
        if not isinstance(want, str) or _sha256(d / name) != want:
            raise ModelFileError(f"{d / name} does not match the checksum in config.json: the file was modified or is partial. Refusing to load it.")
    try:
        tensors = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:  # pragma: no cover - checksum catches most
        raise ModelFileError(f"{d / WEIGHTS} is not a readable safetensors file ({e}).") from e
    genes = (d / GENES).read_text(encoding="utf-8").splitlines()
    return cfg, tensors, genes
