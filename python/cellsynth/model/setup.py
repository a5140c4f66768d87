"""What a model takes from its training data: the genes (all of them, the modelled
subset and the per-gene model of the rest), the labels and the input kind."""

from __future__ import annotations

from .labels import label_summary


def attach(model, data) -> None:
    """Set ``model``'s gene and label attributes from prepared ``data``
    (:class:`~cellsynth.data.intake.Prepared` or :class:`~cellsynth.data.backed.BackedData`)."""
    model.data = data
    #: every input gene, in input order: the genes of generated cells
    model.genes = data.all_genes
    #: the genes the networks learn (a subset of ``genes``, same order)
    model.modelled_genes = data.genes
    model.gene_choice = data.choice
    model.rest = None  # the per-gene model of the unmodelled genes, fitted with the networks
    model.var = data.var
    model.labels = list(data.labels)
    model.categories = data.categories
    model.label_counts, model.combinations = label_summary(model.labels, data.labels, model.categories)
    model.input_kind = data.input_kind
