"""The user-facing model: data set-up, encoder, latent diffusion, save/load.

``CellSynth`` ties the layers together. Training is two-staged: first the gene-space
encoder (AE or VAE, count-level NB decoder when counts are given), then a skip-MLP
denoiser on the *standardised* latent (each dimension scaled to unit variance, so the
diffusion sees data on the scale of its unit noise). The log library size is diffused
as one more latent dimension, so generated cells get library sizes that go with their
cell state. Generation decodes sampled latents to gene proportions and draws NB counts.
The work is done in the sibling modules: :mod:`.fitting` (training), :mod:`.codec`
(genes <-> latent), :mod:`.labels` (conditions), :mod:`.sampling` (filters,
provenance), :mod:`.persistence` (model files), :mod:`.stream` (generation to disk).
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import torch

from ..data.backed import BackedData, prepare_any
from ..data.genes import MIN_CELLS, N_TOP_GENES
from ..data.intake import Prepared
from ..diffusion.prior import LatentPrior, SamplingOptions
from ..distributed import Dist, device_for, from_env
from ..errors import InputError
from ..pretrained import align_gene_parameters, pretrained_architecture
from ..seeding import generator as seeded
from ..train import History
from . import codec, fitting, persistence, sampling, stream
from .config import Hyperparameters, default_device
from .labels import add_clusters, condition_tensor, resolve_conditions
from .setup import attach
from .networks import build

log = logging.getLogger("cellsynth")


class CellSynth:
    """Latent diffusion model of single-cell expression.

    Parameters
    ----------
    adata
        Training cells (AnnData or ``.h5ad`` path): raw counts preferred (in ``X`` or
        ``layers['counts']``), log-normalised values accepted.
    labels
        ``obs`` columns to condition on (cell type, tissue, treatment, ...).
    layer, recover_counts
        Expression layer to use (default ``layers['counts']`` if present, else ``X``);
        log-normalised UMI counts in it are turned back into their exact counts unless
        ``recover_counts=False`` (:mod:`cellsynth.data.recover`).
    n_top_genes, min_cells, genes
        The networks learn the genes detected in >= ``min_cells`` cells, at most
        ``n_top_genes`` highly variable ones (scanpy; ``None``: all), or exactly ``genes``.
        Generated cells carry every input gene: :mod:`cellsynth.data.genes`.
    drop_empty_cells
        Drop cells with zero counts with a warning instead of refusing the data.
    pretrained
        Saved model whose encoder (architecture and weights, aligned to these genes by
        name; new genes start fresh) :meth:`fit` fine-tunes.
    clusters
        Also condition on Leiden clusters (SCLD's pre-guidance; label column ``"cluster"``)
        to ask for "more of this cluster" on unlabelled data. Off by default: it makes
        the *unconditional* cells less realistic (``benchmarks/NOTES.md``).
    seed
        Seed for every random path of training (splits, batches, noise).
    device
        ``"cpu"``, ``"cuda"``, ... Default: CUDA when available.
    **hyperparameters
        See :class:`Hyperparameters` (``encoder="ae"|"vae"``, ``decoder="mlp"|"linear"``, ``schedule=...``,
        ``diffusion_steps=...``, ...).

    Examples
    --------
    >>> import cellsynth
    >>> adata = cellsynth.data.pbmc68k_counts()
    >>> m = cellsynth.CellSynth(adata, labels=["bulk_labels"])
    >>> m.fit()  # doctest: +SKIP
    >>> new = m.generate(1000, seed=0)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: ad.AnnData | str | os.PathLike | None,
        labels: list[str] | str | None = None,
        *,
        layer: str | None = None,
        n_top_genes: int | None = N_TOP_GENES,
        min_cells: int = MIN_CELLS,
        genes: list[str] | None = None,
        recover_counts: bool = True,
        drop_empty_cells: bool = False,
        pretrained: str | os.PathLike | None = None,
        clusters: bool = False,
        backed: bool = False,
        seed: int = 0,
        device: str | None = None,
        **hyperparameters,
    ):
        pre = None
        if pretrained is not None:
            hyperparameters, pre = pretrained_architecture(pretrained, hyperparameters)
        self.hparams = Hyperparameters.from_dict(hyperparameters)
        self.hparams.check()
        self.seed = int(seed)
        #: the denoiser's arithmetic: "fp32", "bf16" ("fp16": CUDA sampling); :mod:`cellsynth.precision`
        self.precision = "fp32"
        self.dist = from_env(device) if adata is not None else Dist()
        self.device = torch.device(device_for(self.dist, device) or default_device())
        self.history: dict[str, History] = {}
        self.is_trained = False
        self.data: Prepared | BackedData | None = None
        if adata is None:  # used by load()
            return
        if isinstance(labels, str):
            labels = [labels]
        if backed and clusters:
            raise InputError("clusters=True needs the whole matrix in memory; cluster first (e.g. with scanpy on a subsample) and pass the column as a label.")
        data = prepare_any(adata, labels=labels, layer=layer, drop_empty_cells=drop_empty_cells, backed=backed, seed=self.seed,
                           progress_bar=self.dist.is_main, n_top_genes=n_top_genes, min_cells=min_cells, genes=genes, recover=recover_counts)
        self.cluster_column = add_clusters(data, self.hparams.cluster_resolution, self.seed) if clusters else None
        attach(self, data)
        build(self)
        self.pretrained_genes_shared = None
        if pre is not None:
            self.pretrained_genes_shared = align_gene_parameters(self.encoder, pre[0], pre[1], self.modelled_genes)

    count_level = property(lambda self: self.input_kind == "counts", doc="Counts in, NB counts out.")

    @property
    def prior(self) -> LatentPrior:
        """The trained reverse process (EMA denoiser, schedule, classifiers) at this model's precision."""
        return LatentPrior(
            self.ema.model, self.schedule, prediction=self.hparams.prediction, classifiers=self.classifiers,
            labels=self.labels, precision=self.precision,
        )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        *,
        encoder_epochs: int | None = None,
        diffusion_steps: int | None = None,
        progress_bar: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        checkpoint_interval: float = 300.0,
        precision: str = "fp32",
        threads: int | None = None,
    ) -> "CellSynth":
        """Train the encoder, then the latent denoiser. Returns ``self``.

        With ``checkpoint_dir``, the training state (weights, optimisers, RNG states,
        loop counters) is saved there at most every ``checkpoint_interval`` seconds
        and at the end of each stage; ``resume=True`` continues from the newest
        checkpoint, reproducing the uninterrupted run. ``precision="bf16"`` trains
        the denoiser under bf16 autocast (the encoder stays fp32). Under ``torchrun`` the ranks
        train one model together (see :mod:`cellsynth.distributed`). ``threads`` fixes torch's
        thread count; by default the training loops run on whichever count measures
        fastest (:mod:`cellsynth.threads`), which does not change the model.

        Examples
        --------
        >>> m.fit(diffusion_steps=2000)  # doctest: +SKIP
        >>> m.fit(checkpoint_dir="run/ckpt", resume=True)  # doctest: +SKIP
        """
        fitting.fit(self, encoder_epochs=encoder_epochs, diffusion_steps=diffusion_steps, progress_bar=progress_bar,
                    checkpoint_dir=checkpoint_dir, resume=resume, checkpoint_interval=checkpoint_interval,
                    precision=precision, threads=threads)
        return self

    def check_trained(self) -> None:
        """Raise unless the model is trained (or loaded)."""
        if not self.is_trained:
            raise RuntimeError("The model is not trained yet; call .fit() first (or CellSynth.load(dir)).")

    # ------------------------------------------------------------------ genes <-> latent
    def get_latent(self, adata: ad.AnnData, *, standardised: bool = True) -> np.ndarray:
        """Latent representation of cells (gene list must match the model's).

        Returns the standardised diffusion latent (the last column is the log library
        size for count-level models).
        """
        self.check_trained()
        return codec.latent_of(self, adata, standardised)

    decode = codec.decode  # m.decode(zs, seed=0): standardised latents -> (X, counts or None), modelled genes
    cells = codec.cells  # m.cells(zs, seed=0): the same over every input gene
    output_var = codec.output_var  # m.output_var(): var of generated cells
    modelled_index = property(lambda self: self.gene_choice.modelled, doc="Positions of modelled_genes in genes.")

    def clamp_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Keep sampled latents inside the range the training latents span (10 % slack)."""
        span = self.latent_max - self.latent_min
        return torch.maximum(torch.minimum(z, self.latent_max + 0.1 * span), self.latent_min - 0.1 * span)

    def condition_codes(self, conditions: dict[str, str] | None) -> dict[str, int]:
        """Validated label codes of ``{column: value}`` (clear errors; rare labels refused)."""
        return resolve_conditions(conditions, self.labels, self.categories, self.label_counts, self.hparams.min_cells_per_label)

    def condition_tensor(self, n: int, codes: dict[str, int]) -> torch.Tensor | None:
        """Per-cell condition codes, the null token for columns not asked for."""
        return condition_tensor(self, n, codes)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latent(
        self,
        n_cells: int,
        *,
        conditions: dict[str, str] | None = None,
        guidance: str = "cfg",
        scale: float | dict | None = None,
        sampler: str = "ddim",
        steps: int | None = 50,
        seed: int = 0,
        generator: torch.Generator | None = None,
        variance_weight: float = 0.5,
        eta: float = 0.0,
        batch_size: int = 4096,
        progress_bar: bool = True,
    ) -> torch.Tensor:
        """Sample ``n_cells`` standardised latents from the diffusion prior (see
        :meth:`generate`); ``generator``, when given, is used instead of ``seed``."""
        self.check_trained()
        n_cells = sampling.check_request(n_cells, sampling.MAX_IN_MEMORY_CELLS, "sample fewer at a time.")
        opts = SamplingOptions(sampler, steps, variance_weight, eta, guidance, scale).check(self.schedule.n_steps)
        cond = self.condition_tensor(int(n_cells), self.condition_codes(conditions))
        g = generator if generator is not None else seeded(seed)
        return sampling.sample(self, int(n_cells), cond, opts, g, batch_size=batch_size, progress_bar=progress_bar)

    def predict_labels(self, zs: torch.Tensor) -> dict[str, np.ndarray]:
        """Labels of standardised latents under each clean (t = 0) latent classifier."""
        self.check_trained()
        return {col: np.asarray(self.categories[col])[k.cpu().numpy()] for col, k in sampling.clean_codes(self, zs).items()}

    @torch.no_grad()
    def realism_score(self, zs: torch.Tensor) -> np.ndarray:
        """Discriminator logit per standardised latent: higher looks more like a real cell."""
        if not self.has_discriminator:
            raise RuntimeError("This model has no discriminator (trained with discriminator_steps=0).")
        return self.discriminator(zs).cpu().numpy()

    def generate(
        self,
        n_cells: int,
        *,
        conditions: dict[str, str] | None = None,
        per_condition: bool = False,
        guidance: str = "cfg",
        scale: float | dict | None = None,
        filter: str | None = None,
        keep_fraction: float = 0.8,
        sampler: str = "ddim",
        steps: int | None = 50,
        seed: int = 0,
        variance_weight: float = 0.5,
        eta: float = 0.0,
        progress_bar: bool = True,
        threads: int | None = None,
    ) -> ad.AnnData:
        """Generate new cells, optionally of given conditions.

        Parameters
        ----------
        n_cells
            Number of cells.
        conditions
            ``{"column": "value", ...}``: cells of these labels (several columns at once
            combine, e.g. a tissue x cell-type pair never sequenced together). Columns
            not named are left free.
        per_condition
            Split ``n_cells`` over every label combination in its training proportion.
        guidance
            ``"cfg"`` (classifier-free, default; ``scale`` s in ``ε_u + s (ε_c − ε_u)``,
            default 1 = the plain conditional model) or ``"classifier"`` (noisy-latent
            classifiers; ``scale`` = γ, default 10, or a dict ``{column: γ}``;
            applied for t <= T/2). For a combination of columns never seen together
            in training, raise γ (e.g. 40; see ``benchmarks/RESULTS.md``).
        filter
            ``None``, ``"discriminator"`` (SCLD post-guidance: draw ``n/keep_fraction``
            cells, keep the ``n`` the real-vs-generated discriminator rates most real)
            or ``"classifier"`` (keep cells the clean classifiers label as asked,
            drawing more until ``n`` pass). ``uns['cellsynth']['filter']`` reports how
            many were drawn to keep how many.
        sampler
            ``"ddim"`` (default, ``steps`` steps, deterministic at ``eta=0``) or
            ``"ddpm"`` (all ``T`` ancestral steps, variance weight ``variance_weight``
            as in scDiffusion Eq. 3).
        seed
            Seed of the initial noise, the DDPM noise and the count sampling.
        threads
            torch's threads (default: from the work and the CPUs, :mod:`cellsynth.threads`).

        Returns
        -------
        AnnData with the training genes: ``X`` log-normalised (1e4 + log1p of the
        sampled counts), ``layers['counts']`` integer counts (count-level models),
        ``obs['synthetic'] = True`` and one ``obs`` column per requested condition,
        and provenance in ``uns['cellsynth']``.

        Examples
        --------
        >>> new = m.generate(500, sampler="ddim", steps=50, seed=1)  # doctest: +SKIP
        >>> b = m.generate(200, conditions={"cell_type": "B"}, filter="discriminator")  # doctest: +SKIP
        >>> mix = m.generate(1000, per_condition=True, guidance="classifier")  # doctest: +SKIP
        """
        opts = SamplingOptions(sampler, steps, variance_weight, eta, guidance, scale)
        return sampling.generate(self, n_cells, opts, conditions=conditions, per_condition=per_condition, filter=filter,
                                 keep_fraction=keep_fraction, seed=seed, progress_bar=progress_bar, threads=threads)

    def generate_to_file(self, n_cells: int, path: str | os.PathLike, **kwargs):
        """Stream cells to an ``.h5ad`` in chunks (:func:`cellsynth.model.stream.generate_to_file`)."""
        return stream.generate_to_file(self, n_cells, path, **kwargs)

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write ``config.json``, ``weights.safetensors`` and ``genes.txt`` to ``directory``."""
        persistence.save(self, directory, overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, adata: ad.AnnData | None = None, device: str | None = None) -> "CellSynth":
        """Load a saved model; with ``adata``, refuse it unless its genes match.

        Examples
        --------
        >>> m = CellSynth.load("model_dir")  # doctest: +SKIP
        """
        return persistence.load(cls, directory, adata, device)

    check_genes = persistence.check_genes  # m.check_genes(adata): refuse other genes or another order

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return (f"CellSynth({state}, {len(self.genes)} genes ({len(self.modelled_genes)} modelled), encoder={self.hparams.encoder}, "
                f"latent={self.hparams.latent_dim}, labels={self.labels}, input={self.input_kind})")
