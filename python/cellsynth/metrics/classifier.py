"""Classifier two-sample tests (real vs generated AUC) and label accuracy, via scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier


def _two_sample(real: np.ndarray, generated: np.ndarray):
    x = np.concatenate([real, generated])
    y = np.r_[np.zeros(len(real)), np.ones(len(generated))]
    return x, y


def classifier_auc(real: np.ndarray, generated: np.ndarray, clf, *, folds: int = 5, seed: int = 0) -> float:
    """ROC AUC of ``clf`` telling generated from real, out-of-fold over stratified folds.

    0.5 means indistinguishable; 1.0 perfectly separable.
    """
    x, y = _two_sample(real, generated)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def knn_auc(real: np.ndarray, generated: np.ndarray, *, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Real-vs-generated AUC of a k-nearest-neighbour classifier (k=5 as in the papers)."""
    return classifier_auc(real, generated, KNeighborsClassifier(n_neighbors=k), folds=folds, seed=seed)


def rf_auc(real: np.ndarray, generated: np.ndarray, *, n_estimators: int = 1000, max_depth: int = 5, folds: int = 5, seed: int = 0, n_jobs: int = -1) -> float:
    """Real-vs-generated AUC of a random forest (1000 trees of depth 5, as in scDiffusion)."""
    clf = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=n_jobs)
    return classifier_auc(real, generated, clf, folds=folds, seed=seed)


def label_accuracy(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on ``(x, y)`` of a logistic regression trained on real ``(train_x, train_y)``."""
    clf = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    return float(np.mean(clf.predict(x) == np.asarray(y)))
