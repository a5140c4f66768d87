"""A negative-binomial simulator with known truth, for tests and benchmarks.

Each cell has a cell type and one level of every extra condition column; its mean
expression is ``library * softmax(base + type program + Σ condition effects)`` and
counts are gamma-Poisson (negative binomial with inverse dispersion ``theta``). Cell
types up-regulate their own sparse gene programs; each condition level shifts its own
sparse gene set up or down, the same in every cell type, so a (type, level) pair never
seen in training is still well defined.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def _nb_counts(logit: np.ndarray, rng: np.random.Generator, library_mean: float, theta: float, fallback_gene: int) -> np.ndarray:
    """Gamma-Poisson counts with means ``library * softmax(logit)`` (log-normal library
    sizes); a cell that comes out empty gets one count of ``fallback_gene``."""
    p = np.exp(logit - logit.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lib = rng.lognormal(np.log(library_mean), 0.3, logit.shape[0])
    counts = rng.poisson(rng.gamma(theta, p * lib[:, None] / theta)).astype(np.float32)
    counts[counts.sum(1) == 0, fallback_gene] = 1
    return counts


def gene_programs(bio: np.random.Generator, n_levels: int, n_genes: int, k: int, effect_size: float, signed: bool) -> np.ndarray:
    """One sparse gene program per level: ``k`` genes shifted by about ``effect_size``
    (log-normal sizes; random signs when ``signed``)."""
    eff = np.zeros((n_levels, n_genes))
    for lvl in range(n_levels):
        genes = bio.choice(n_genes, k, replace=False)
        size = bio.lognormal(np.log(effect_size), 0.3, k)
        eff[lvl, genes] = size * (bio.choice([-1, 1], k) if signed else 1)
    return eff


def simulate(
    n_cells: int = 2000,
    n_genes: int = 500,
    n_types: int = 4,
    *,
    conditions: dict[str, int] | None = None,
    program_fraction: float = 0.1,
    effect_size: float = 1.5,
    library_mean: float = 2000.0,
    theta: float = 5.0,
    seed: int = 0,
    cells_seed: int | None = None,
) -> ad.AnnData:
    """Simulated UMI counts in ``X`` with ``obs['cell_type']`` and one column per condition.

    Parameters
    ----------
    conditions
        Extra condition columns and their number of levels, e.g. ``{"tissue": 3}``.
        Levels are drawn uniformly and independently of the cell type.
    seed
        Seed of the *biology* (gene programs, effects).
    cells_seed
        Seed of the cells drawn from it (default ``seed``); two calls with the same
        ``seed`` and different ``cells_seed`` give fresh cells of the same system.

    Examples
    --------
    >>> a = simulate(500, 200, 3, conditions={"tissue": 2}, seed=0)
    >>> a.shape, sorted(a.obs.columns)
    ((500, 200), ['cell_type', 'tissue'])
    """
    conditions = dict(conditions or {})
    bio = np.random.default_rng(seed)
    base = bio.normal(0, 1, n_genes)

    k = max(1, int(round(program_fraction * n_genes)))
    types_prog = gene_programs(bio, n_types, n_genes, k, effect_size, signed=False)
    cond_prog = {c: gene_programs(bio, n_lv, n_genes, k, effect_size, signed=True) for c, n_lv in conditions.items()}
    rng = np.random.default_rng(seed if cells_seed is None else cells_seed)
    types = rng.integers(0, n_types, n_cells)
    logit = base[None, :] + types_prog[types]
    obs = {"cell_type": pd.Categorical([f"type{t}" for t in types], categories=[f"type{t}" for t in range(n_types)])}
    for c, k in conditions.items():
        lv = rng.integers(0, k, n_cells)
        logit = logit + cond_prog[c][lv]
        obs[c] = pd.Categorical([f"{c}{v}" for v in lv], categories=[f"{c}{v}" for v in range(k)])
    counts = _nb_counts(logit, rng, library_mean, theta, int(np.argmax(base)))
    return ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(obs, index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )


def simulate_trajectory(
    n_cells: int = 2000,
    n_genes: int = 300,
    *,
    n_states: int = 5,
    changing_fraction: float = 0.15,
    effect_size: float = 2.0,
    library_mean: float = 2000.0,
    theta: float = 5.0,
    seed: int = 0,
    cells_seed: int | None = None,
) -> ad.AnnData:
    """A linear trajectory with known truth: cells at pseudotime τ ~ U(0, 1).

    A fraction ``changing_fraction`` of genes change along the path: their log-mean
    moves by about ``± effect_size`` linearly in τ (``var['changing']``; the exact
    start-to-end log fold change in ``var['log_fold_change']``); the others keep their
    expression *proportion*: the changing block is renormalised to a constant total,
    so no gene moves only because others did. ``obs['state']`` bins τ into ``n_states`` equal states
    (``state0`` ... the start, the last one the end), ``obs['pseudotime']`` is τ.

    Examples
    --------
    >>> a = simulate_trajectory(300, 100, n_states=3, seed=0)
    >>> list(a.obs["state"].cat.categories), int(a.var["changing"].sum())
    (['state0', 'state1', 'state2'], 15)
    """
    bio = np.random.default_rng(seed)
    base = bio.normal(0, 1, n_genes)
    k = max(1, int(round(changing_fraction * n_genes)))
    changing = np.zeros(n_genes, bool)
    changing[bio.choice(n_genes, k, replace=False)] = True
    slope = np.zeros(n_genes)
    slope[changing] = bio.lognormal(np.log(effect_size), 0.2, k) * bio.choice([-1, 1], k)
    rng = np.random.default_rng(seed if cells_seed is None else cells_seed)
    tau = rng.uniform(0, 1, n_cells)
    def block_shift(t: np.ndarray) -> np.ndarray:  # keeps the changing block's total mass
        m = np.exp(base[changing][None, :] + t[:, None] * slope[changing][None, :]).sum(1)
        return np.log(np.exp(base[changing]).sum() / m)

    logit = base[None, :] + tau[:, None] * slope[None, :]
    logit[:, changing] += block_shift(tau)[:, None]
    counts = _nb_counts(logit, rng, library_mean, theta, int(np.argmax(base)))
    lfc = np.where(changing, slope + block_shift(np.ones(1))[0], 0.0)
    state = np.minimum((tau * n_states).astype(int), n_states - 1)
    names = [f"state{s}" for s in range(n_states)]
    return ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame({"state": pd.Categorical([names[s] for s in state], categories=names), "pseudotime": tau}, index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame({"changing": changing, "log_fold_change": lfc}, index=[f"gene{j}" for j in range(n_genes)]),
    )


def simulate_perturbation(
    n_cells: int = 3000,
    n_genes: int = 500,
    n_types: int = 4,
    *,
    response_fraction: float = 0.1,
    effect_size: float = 1.5,
    type_specific: float = 0.3,
    response: str = "additive",
    program_genes: int = 20,
    library_mean: float = 2000.0,
    theta: float = 5.0,
    seed: int = 0,
    cells_seed: int | None = None,
) -> ad.AnnData:
    """Control and stimulated cells of several types, with a type-dependent response.

    Cell types up-regulate their own gene programs as in :func:`simulate`;
    ``obs['condition']`` is ``"control"`` or ``"stimulated"`` (half each). The
    stimulation shifts the log-mean of a shared set of ``response_fraction`` genes by
    about ``± effect_size``, scaled per type by a factor around 1 (log-normal, sd 0.2),
    plus a type's own response on another set of genes of size ``type_specific ×
    effect_size``: the response differs by cell type but mostly transfers, which is
    what latent-arithmetic prediction (scGen) relies on. The exact per-type log-mean
    shift is in ``varm['true_response']`` (genes × types; before the softmax's
    renormalisation).

    ``response="state"`` makes the response depend on each cell's state, as interferon
    or drug responses do. Every cell has a within-type program value ``p ~ N(0, 1)``
    (``obs['true_program']``) that also raises a block of ``program_genes`` genes
    (``var['program_gene']``, loading ~0.8), so it shows in control cells too. Its
    response strength is ``s = sigmoid(4 (p - m_type))`` (``obs['true_response_strength']``;
    the thresholds ``m_type ~ N(0, 0.5)`` in ``uns['true_response']``), every gene's
    log-fold change in that cell is ``s × varm['true_response'][type]``, and up-regulation
    saturates: a treated log-mean stops at ``baseline + min(lfc, max(ceiling - baseline,
    0))``, the ceiling being the 95th percentile of the baseline log-means, so genes
    already high rise less. Control cells carry the same ``p`` and ``s`` (the strength
    they would have had). ``response="additive"`` (default) gives the same cells as before
    this option existed.

    Examples
    --------
    >>> a = simulate_perturbation(400, 100, 3, seed=0)
    >>> list(a.obs["condition"].cat.categories), a.varm["true_response"].shape
    (['control', 'stimulated'], (100, 3))
    >>> b = simulate_perturbation(400, 100, 3, response="state", seed=0)
    >>> round(float(b.obs["true_response_strength"].min()), 2) >= 0, int(b.var["program_gene"].sum())
    (True, 20)
    """
    if response not in ("additive", "state"):
        raise ValueError(f"response must be 'additive' or 'state', got {response!r}.")
    bio = np.random.default_rng(seed)
    base = bio.normal(0, 1, n_genes)
    k = max(1, int(round(response_fraction * n_genes)))
    types_prog = gene_programs(bio, n_types, n_genes, k, effect_size, signed=False)
    shared = gene_programs(bio, 1, n_genes, k, effect_size, signed=True)[0]
    scale = bio.lognormal(0.0, 0.2, n_types)
    effect = scale[:, None] * shared[None, :]
    for t in range(n_types):
        own = bio.choice(n_genes, max(1, k // 2), replace=False)
        effect[t, own] += type_specific * effect_size * bio.choice([-1, 1], own.size)
    if response == "state":  # drawn after the additive system's biology, which stays the same
        block = bio.choice(n_genes, min(program_genes, n_genes), replace=False)
        loading = np.zeros(n_genes)
        loading[block] = bio.lognormal(np.log(0.8), 0.2, block.size)
        threshold = bio.normal(0, 0.5, n_types)
        ceiling = float(np.quantile(base[None, :] + types_prog, 0.95))
    rng = np.random.default_rng(seed if cells_seed is None else cells_seed)
    types = rng.integers(0, n_types, n_cells)
    stim = rng.integers(0, 2, n_cells)
    tnames = [f"type{t}" for t in range(n_types)]
    levels = ["control", "stimulated"]
    obs = {
        "cell_type": pd.Categorical([tnames[t] for t in types], categories=tnames),
        "condition": pd.Categorical([levels[s] for s in stim], categories=levels),
    }
    if response == "additive":
        logit = base[None, :] + types_prog[types] + stim[:, None] * effect[types]
    else:
        program = rng.normal(0, 1, n_cells)
        strength = 1 / (1 + np.exp(-4 * (program - threshold[types])))
        baseline = base[None, :] + types_prog[types] + program[:, None] * loading[None, :]
        lfc = strength[:, None] * effect[types]
        up = np.minimum(lfc, np.maximum(ceiling - baseline, 0))
        logit = baseline + stim[:, None] * np.where(lfc > 0, up, lfc)
        obs |= {"true_program": program, "true_response_strength": strength}
    counts = _nb_counts(logit, rng, library_mean, theta, int(np.argmax(base)))
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    if response == "state":
        var["program_gene"] = loading > 0
    out = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(obs, index=[f"cell{i}" for i in range(n_cells)]), var=var)
    out.varm["true_response"] = pd.DataFrame(effect.T, index=out.var_names, columns=tnames)
    if response == "state":
        out.uns["true_response"] = {"kind": "state", "threshold": dict(zip(tnames, threshold.tolist())), "ceiling": ceiling,
                                    "slope": 4.0}
    return out


def simulate_transcriptome(
    n_cells: int = 5000,
    n_genes: int = 33_000,
    n_types: int = 6,
    *,
    library_median: float = 4000.0,
    silent_fraction: float = 0.3,
    program_genes: int = 200,
    effect_size: float = 1.5,
    seed: int = 0,
    cells_seed: int | None = None,
    chunk: int = 512,
) -> ad.AnnData:
    """Whole-transcriptome-shaped UMI counts (sparse CSR), as Cell Ranger gives them.

    Gene abundances are log-normal over several orders of magnitude, a fraction
    ``silent_fraction`` of genes is never expressed, each cell type up-regulates its own
    ``program_genes`` genes, library sizes are log-normal around ``library_median``
    (sd 0.5 in log) and counts are gamma-Poisson with a per-gene dispersion. With the
    defaults about 93-95 % of the entries are zero, as in 10x data. Cells are drawn
    ``chunk`` at a time, so memory stays O(chunk x genes) plus the sparse result.
    ``var`` has ``gene_ids`` and ``feature_types`` as in a 10x matrix.

    Examples
    --------
    >>> a = simulate_transcriptome(300, 2000, 3, seed=0)
    >>> a.shape, a.X.format, round(1 - a.X.nnz / (300 * 2000), 2) > 0.85
    ((300, 2000), 'csr', True)
    """
    bio = np.random.default_rng(seed)
    base = bio.normal(0.0, 2.0, n_genes)
    silent = bio.random(n_genes) < silent_fraction
    k = min(program_genes, n_genes)
    expressed = np.flatnonzero(~silent)
    prog = np.zeros((n_types, n_genes))
    for t in range(n_types):
        genes = bio.choice(expressed, min(k, len(expressed)), replace=False)
        prog[t, genes] = bio.lognormal(np.log(effect_size), 0.3, len(genes))
    theta = bio.lognormal(np.log(2.0), 0.5, n_genes)
    rng = np.random.default_rng(seed if cells_seed is None else cells_seed)
    types = rng.integers(0, n_types, n_cells)
    lib = rng.lognormal(np.log(library_median), 0.5, n_cells)
    blocks = []
    for s in range(0, n_cells, chunk):
        t, ln = types[s : s + chunk], lib[s : s + chunk]
        logit = base[None, :] + prog[t]
        logit[:, silent] = -np.inf
        p = np.exp(logit - logit.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        mu = p * ln[:, None]
        c = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)
        c[c.sum(1) == 0, expressed[np.argmax(base[expressed])]] = 1
        blocks.append(sp.csr_matrix(c))
    names = [f"type{t}" for t in range(n_types)]
    return ad.AnnData(
        sp.vstack(blocks, format="csr"),
        obs=pd.DataFrame({"cell_type": pd.Categorical([names[t] for t in types], categories=names)},
                         index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame({"gene_ids": [f"ENSG{j:011d}" for j in range(n_genes)], "feature_types": "Gene Expression"},
                         index=[f"gene{j}" for j in range(n_genes)]),
    )
