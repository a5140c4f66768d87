"""Realism metrics for generated cells, each meant to sit beside a real-vs-real control.

Array-first functions; kernels run natively when the C++ extension is built, else in
NumPy/torch (:func:`backend` says which).
"""

from ._backend import backend, device
from .classifier import classifier_auc, knn_auc, label_accuracy, rf_auc
from .distribution import gene_mean_correlation, median_heuristic, mmd
from .fidelity import fidelity, joint_pcs, lognorm_counts
from .neighbors import clisi, ilisi, knn, lisi, memorisation

__all__ = [
    "backend", "device", "classifier_auc", "knn_auc", "label_accuracy", "rf_auc", "gene_mean_correlation",
    "median_heuristic", "mmd", "fidelity", "joint_pcs", "lognorm_counts", "clisi", "ilisi", "knn", "lisi", "memorisation",
]
