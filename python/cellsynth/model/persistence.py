"""Model files: ``config.json`` + ``weights.safetensors`` + ``genes.txt`` (written and
checked by :mod:`cellsynth.io.checkpoint`); never pickles.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import anndata as ad
import torch

import numpy as np
import pandas as pd

from .._version import __version__
from ..calibration import CountCalibration
from ..hurdle import Hurdle
from ..quantiles import QuantileMap
from ..data.genes import GeneChoice, RestModel
from ..errors import InputError, ModelFileError
from ..io.checkpoint import load_model, save_model
from .config import STATS
from .networks import build


def config(model) -> dict:
    """``config.json`` of a trained model."""
    return {
        "cellsynth_version": __version__,
        "hyperparameters": asdict(model.hparams),
        "seed": model.seed,
        "labels": model.labels,
        "categories": model.categories,
        "input_kind": model.input_kind,
        "n_genes": len(model.genes),
        "gene_choice": model.gene_choice.summary(),
        "var": var_columns(model.var),
        "label_counts": model.label_counts,
        "combinations": model.combinations,
        "cluster_column": model.cluster_column,
        "has_discriminator": model.has_discriminator,
        "count_calibration": model.calibration is not None,
        "value_map": model.value_map is not None,
        "value_map_kind": "hurdle" if isinstance(model.value_map, Hurdle) else "quantile",
        # class index -> label of each latent classifier (same order as categories)
        "classifier_classes": {c: {str(i): v for i, v in enumerate(model.categories[c])} for c in model.labels},
    }


def save(model, directory: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``model`` to ``directory`` (see :meth:`CellSynth.save`)."""
    model.check_trained()
    tensors = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    tensors |= {f"denoiser.{k}": v for k, v in model.denoiser.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in model.ema.model.state_dict().items()}
    tensors |= {f"classifiers.{k}": v for k, v in model.classifiers.state_dict().items()}
    if model.has_discriminator:
        tensors |= {f"discriminator.{k}": v for k, v in model.discriminator.state_dict().items()}
    for name in STATS:
        tensors[f"stats.{name}"] = getattr(model, name)
    if model.combination_covs is not None:
        tensors["stats.combination_covs"] = model.combination_covs
    tensors["genes.modelled"] = torch.as_tensor(model.modelled_index, dtype=torch.int64)
    if model.rest is not None:
        tensors |= {k: torch.as_tensor(v) for k, v in model.rest.tensors().items()}
    if isinstance(model.value_map, Hurdle):
        tensors["value_map.nonzero_mean"] = torch.as_tensor(model.value_map.nonzero_mean)
        tensors["value_map.nonzero_quantiles"] = torch.as_tensor(model.value_map.nonzero_quantiles)
    elif model.value_map is not None:
        tensors["value_map.source"] = torch.as_tensor(model.value_map.source)
        tensors["value_map.target"] = torch.as_tensor(model.value_map.target)
    if model.calibration is not None:
        tensors["calibration.scale"] = model.calibration.scale.double()
        tensors["calibration.theta"] = model.calibration.theta.double()
    save_model(directory, config(model), tensors, model.genes, overwrite=overwrite)


def load(cls, directory: str | os.PathLike, adata: ad.AnnData | None = None, device: str | None = None):
    """A ``cls`` (:class:`CellSynth`) read from ``directory`` (see :meth:`CellSynth.load`)."""
    cfg, tensors, genes = load_model(directory)
    try:
        m = cls(None, seed=cfg["seed"], device=device, **cfg["hyperparameters"])
        m.genes = genes
        if len(genes) != cfg["n_genes"]:
            raise ModelFileError(f"genes.txt lists {len(genes)} genes but config.json says {cfg['n_genes']}.")
        m.labels = list(cfg["labels"])
        m.categories = {k: list(v) for k, v in cfg["categories"].items()}
        m.input_kind = cfg["input_kind"]
        m.label_counts = {c: {k: int(v) for k, v in d.items()} for c, d in cfg["label_counts"].items()}
        m.combinations = [list(map(int, r)) for r in cfg["combinations"]]
        m.cluster_column = cfg["cluster_column"]
        choice = dict(cfg.get("gene_choice") or {"method": "all", "n_top_genes": None, "min_cells": 0})
        var = var_frame(cfg.get("var"), genes)
        has_disc = bool(cfg["has_discriminator"])
        calibrated = bool(cfg.get("count_calibration", False))  # absent in models saved before it existed
        mapped = bool(cfg.get("value_map", False))
        map_kind = str(cfg.get("value_map_kind", "quantile"))  # absent in models saved before the hurdle
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{directory}/config.json is malformed ({e}).") from e
    try:
        index = tensors["genes.modelled"].numpy().astype(np.int64) if "genes.modelled" in tensors else np.arange(len(genes))
        if index.ndim != 1 or len(index) == 0 or (np.diff(index) <= 0).any() or index[0] < 0 or index[-1] >= len(genes):
            raise ModelFileError(f"{directory}: genes.modelled is not an increasing list of positions in genes.txt.")
        m.gene_choice = GeneChoice(index, len(genes), choice["method"], choice["n_top_genes"], choice["min_cells"])
        m.modelled_genes = [genes[i] for i in index]
        m.var = var
        m.rest = None
        if len(index) < len(genes):
            m.rest = RestModel.from_tensors(tensors, m.input_kind)
            want = np.setdiff1d(np.arange(len(genes)), index)
            if not np.array_equal(m.rest.genes, want) or m.rest.centroids.shape[1] != m.hparams.latent_dim:
                raise ModelFileError(f"{directory}: the rest-gene tensors do not match genes.txt and genes.modelled.")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{directory}: the gene choice in the model files is malformed ({e}).") from e
    check_sizes(m.hparams, tensors, directory)
    build(m)
    try:
        modules = [("encoder.", m.encoder), ("denoiser.", m.denoiser), ("ema.", m.ema.model), ("classifiers.", m.classifiers)]
        if has_disc:
            modules.append(("discriminator.", m.discriminator))
        for prefix, module in modules:
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(sd, strict=True)
        for name in STATS:
            setattr(m, name, tensors[f"stats.{name}"].to(m.device))
        if m.combination_means.shape != (len(m.combinations), m.diff_dim):
            raise KeyError(f"stats.combination_means has shape {tuple(m.combination_means.shape)}")
        if "stats.combination_covs" in tensors:  # absent in models saved before it existed
            m.combination_covs = tensors["stats.combination_covs"].to(m.device)
            if m.combination_covs.shape != (len(m.combinations), m.diff_dim, m.diff_dim):
                raise KeyError(f"stats.combination_covs has shape {tuple(m.combination_covs.shape)}")
        if calibrated:
            scale, theta = tensors["calibration.scale"], tensors["calibration.theta"]
            if scale.shape != (len(m.modelled_genes),) or theta.shape != (len(m.modelled_genes),):
                raise KeyError(f"calibration tensors have shapes {tuple(scale.shape)}, {tuple(theta.shape)}")
            m.calibration = CountCalibration(scale.to(m.device, torch.float64), theta.to(m.device, torch.float64))
        if mapped and map_kind == "hurdle":
            mean, qs = tensors["value_map.nonzero_mean"].numpy(), tensors["value_map.nonzero_quantiles"].numpy()
            if mean.shape != (len(m.modelled_genes),) or qs.ndim != 2 or qs.shape[1] != len(m.modelled_genes):
                raise KeyError(f"value_map tensors have shapes {tuple(mean.shape)}, {tuple(qs.shape)}")
            m.value_map = Hurdle(mean, qs)
        elif mapped:
            src, tgt = tensors["value_map.source"].numpy(), tensors["value_map.target"].numpy()
            if src.shape != tgt.shape or src.ndim != 2 or src.shape[1] != len(m.modelled_genes):
                raise KeyError(f"value_map tensors have shapes {tuple(src.shape)}, {tuple(tgt.shape)}")
            m.value_map = QuantileMap(src, tgt)
    except (RuntimeError, KeyError) as e:
        raise ModelFileError(f"The weights in {directory} do not fit the configured model ({e}).") from e
    m.has_discriminator = has_disc
    for module in (m.encoder, m.denoiser, m.classifiers, m.discriminator):
        module.eval()
    m.is_trained = True
    if adata is not None:
        m.check_genes(adata)
    return m


def check_genes(model, adata: ad.AnnData) -> None:
    """Raise unless ``adata`` has exactly the model's genes, in order."""
    have = [str(g) for g in adata.var_names]
    if have != model.genes:
        missing = sorted(set(model.genes) - set(have))
        extra = sorted(set(have) - set(model.genes))
        raise InputError(
            f"The data's genes do not match the model's ({len(have)} vs {len(model.genes)} genes; "
            f"{len(missing)} missing e.g. {missing[:3]}, {len(extra)} extra e.g. {extra[:3]}"
            + ("; same genes, different order" if not missing and not extra else "")
            + "). Subset/reorder with adata[:, model.genes]."
        )


def var_columns(var: pd.DataFrame | None) -> list:
    """The input's gene annotations for ``config.json``, as ``[name, values]`` pairs in
    column order: columns of strings, numbers or booleans (others are left out)."""
    if var is None:
        return []
    out = []
    for col in var.columns:
        v = var[col]
        if isinstance(v.dtype, pd.CategoricalDtype) or v.dtype == object:
            vals = v.astype(str).tolist()
        elif v.dtype.kind in "biuf":
            vals = [None if (isinstance(x, float) and not np.isfinite(x)) else x for x in v.tolist()]
        else:
            continue
        out.append([str(col), vals])
    return out


def var_frame(columns: list | None, genes: list[str]) -> pd.DataFrame:
    """The gene annotations read back from ``config.json`` (every column the length of genes.txt)."""
    var = pd.DataFrame(index=pd.Index(genes))
    for col, vals in columns or []:
        if not isinstance(vals, list) or len(vals) != len(genes):
            raise ValueError(f"var column {col!r} does not have one value per gene")
        var[str(col)] = vals
    return var


#: the most diffusion steps a config may declare
MAX_DIFFUSION_STEPS = 100_000


def check_sizes(hp, tensors: dict, directory) -> None:
    """Refuse a config whose network sizes its own weights cannot hold, before any
    network is built (a layer is never wider than the widest tensor in the file)."""
    widest = max((max(t.shape) for t in tensors.values() if t.dim() > 0), default=0)
    sizes = {"latent_dim": [hp.latent_dim], "encoder_hidden": hp.encoder_hidden, "denoiser_hidden": hp.denoiser_hidden}
    if any(k.startswith("classifiers.") for k in tensors):  # a model without labels builds no classifier
        sizes["classifier_hidden"] = hp.classifier_hidden
    for name, vals in sizes.items():
        if not all(isinstance(v, int) and 1 <= v <= widest for v in vals):
            raise ModelFileError(f"{directory}/config.json declares {name}={vals}, which the weights file (widest tensor "
                                 f"{widest}) cannot hold: the config was edited or belongs to another model.")
    if not isinstance(hp.n_steps, int) or not 1 <= hp.n_steps <= MAX_DIFFUSION_STEPS:
        raise ModelFileError(f"{directory}/config.json declares n_steps={hp.n_steps} (expected 1-{MAX_DIFFUSION_STEPS}).")
