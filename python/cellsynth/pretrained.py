"""Start an encoder from a pretrained one, aligned to a different gene list.

scDiffusion fine-tunes a pretrained autoencoder but drops its first and last layers
because the gene lists differ. Here the gene-indexed parameters (the input layer's
columns, the output layer's rows, per-gene dispersions) are copied gene by gene for
the genes both lists share; genes new to the pretrained model keep their fresh
initialisation; every other parameter is copied as is.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from .io.checkpoint import load_model

log = logging.getLogger("cellsynth")

ARCH_KEYS = ("encoder", "latent_dim", "encoder_hidden", "dispersion", "decoder")


def read_pretrained_encoder(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """The encoder architecture, encoder weights and modelled genes of a saved cellsynth model."""
    cfg, tensors, genes = load_model(directory)
    if "genes.modelled" in tensors:  # the encoder's genes are the modelled subset of genes.txt
        genes = [genes[int(i)] for i in tensors["genes.modelled"].tolist()]
    hp = cfg.get("hyperparameters", {})
    arch = {k: hp[k] for k in ARCH_KEYS if k in hp}
    enc = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    return arch, enc, genes


def pretrained_architecture(directory: str | os.PathLike, hyperparameters: dict) -> tuple[dict, tuple[dict, list[str]]]:
    """``hyperparameters`` with the saved encoder's architecture filled in, and that
    encoder's (weights, genes); refuses hyper-parameters that contradict it."""
    arch, state, src_genes = read_pretrained_encoder(directory)
    clash = {k: v for k, v in hyperparameters.items() if k in arch and v != arch[k]}
    if clash:
        raise ValueError(f"{clash} conflict with the pretrained encoder's architecture {arch}; drop them.")
    return {**hyperparameters, **arch}, (state, src_genes)


def align_gene_parameters(module: nn.Module, state: dict[str, torch.Tensor], src_genes: list[str], dst_genes: list[str], *, min_shared: float = 0.5) -> int:
    """Copy ``state`` into ``module``, mapping gene-indexed dimensions by gene name.

    Returns the number of shared genes. Raises ``ValueError`` when fewer than
    ``min_shared`` of the destination genes are in the pretrained model, or when a
    parameter cannot be matched.
    """
    src_ix = {g: i for i, g in enumerate(src_genes)}
    shared = [(j, src_ix[g]) for j, g in enumerate(dst_genes) if g in src_ix]
    if len(shared) < min_shared * len(dst_genes):
        raise ValueError(
            f"Only {len(shared)} of the data's {len(dst_genes)} genes are in the pretrained encoder "
            f"({len(src_genes)} genes); at least {min_shared:.0%} must be shared to reuse it."
        )
    dst_j = torch.tensor([j for j, _ in shared], dtype=torch.long)
    src_i = torch.tensor([i for _, i in shared], dtype=torch.long)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"The pretrained encoder lacks parameters {missing[:5]}; its architecture differs.")
    with torch.no_grad():
        for key, dst in own.items():
            src = state[key]
            gene_dims = [d for d in range(dst.dim()) if dst.shape[d] == len(dst_genes) and src.shape[d] == len(src_genes)]
            same_elsewhere = all(src.shape[d] == dst.shape[d] for d in range(dst.dim()) if d not in gene_dims[:1])
            if src.shape == dst.shape and not gene_dims:
                dst.copy_(src)
            elif gene_dims and same_elsewhere:
                d = gene_dims[0]
                dst.index_copy_(d, dst_j, src.index_select(d, src_i))
            else:
                raise ValueError(f"Cannot align pretrained parameter {key!r}: shape {tuple(src.shape)} vs {tuple(dst.shape)}.")
    log.info("pretrained encoder: %d of %d genes shared, %d new", len(shared), len(dst_genes), len(dst_genes) - len(shared))
    return len(shared)
