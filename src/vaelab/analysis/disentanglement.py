"""Disentanglement metrics on any representation: codes (N, D) against ground-truth factors (N, F).

    >>> from vaelab.analysis.disentanglement import mig, dci
    >>> mig(codes, factors)                  # codes: e.g. posterior means; factors: values or classes
    >>> dci(codes, factors)["disentanglement"]

Each metric follows disentanglement_lib's default protocol (Locatello et al. 2019, the configs of
its unsupervised study): the number of points, the discretisation, the classifier. Each states it
in its docstring, takes it as arguments, and is seeded (`seed`).

disentanglement_lib draws fresh observations from a simulator of the factors; these functions get
a fixed sample instead. The points a metric uses are drawn from the rows of `codes` / `factors`:
a classifier's training and test points are disjoint rows (with fewer rows than both ask for, all
rows split in the same ratio), MIG's points are drawn with replacement when there are fewer rows
than it asks for, and where a metric needs points
that share one factor's value (the β-VAE and FactorVAE scores), they are drawn among the rows
with that value. On a sample of a full factor grid (dSprites, shapes2d) that is the simulator's
sampling; elsewhere it conditions on the sample's own distribution of the other factors.

Results do not depend on the order of the rows: the rows are put in a canonical order (sorted by
factors, then codes) before anything is drawn.

Factors may be values (dSprites' `latents_values`) or class indices; each factor's distinct values
become classes 0..K-1. Mutual information and entropy are in nats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# disentanglement_lib's defaults (unsupervised_study_v1 metric configs)
NUM_TRAIN = 10_000
NUM_TEST = 5_000
NUM_BINS = 20
BATCH_SIZE = 64
PRUNE_THRESHOLD = 0.05  # FactorVAE score: latent dimensions with a standard deviation below it are ignored


def _check(codes: Any, factors: Any) -> tuple[np.ndarray, np.ndarray]:
    from vaelab.errors import ConfigError

    c = np.asarray(codes, dtype=np.float64)
    f = np.asarray(factors)
    if c.ndim != 2 or f.ndim != 2:
        raise ConfigError(f"codes and factors must be 2-D arrays (N, D) and (N, F); got shapes {c.shape} and {f.shape}")
    if len(c) != len(f):
        raise ConfigError(f"codes have {len(c)} rows but factors have {len(f)}; give one code per observation")
    if len(c) < 2:
        raise ConfigError(f"{len(c)} observation(s): the metrics need at least 2")
    if not np.isfinite(c).all():
        raise ConfigError("codes contain NaN or infinite values")
    return c, f


def discretize_factors(factors: Any) -> np.ndarray:
    """Each factor's distinct values as classes 0..K-1 (in sorted order): (N, F) int64."""
    f = np.asarray(factors)
    return np.stack([np.unique(f[:, j], return_inverse=True)[1].reshape(-1) for j in range(f.shape[1])], 1)


def _canonical(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows sorted by (factor classes, then codes): a row order that does not depend on the input's."""
    y = discretize_factors(factors)
    keys = np.column_stack([y, codes])
    order = np.lexsort(keys.T[::-1])
    return codes[order], y[order]


def _draw(n: int, num: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(n, size=num, replace=num > n)


def _split(n: int, num_train: int, num_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and test rows, so a classifier is never scored on points it saw. With fewer
    than num_train + num_test rows, all rows are split in the ratio num_train : num_test."""
    perm = rng.permutation(n)
    if n < num_train + num_test:
        num_train = max(1, min(n - 1, round(n * num_train / (num_train + num_test))))
        num_test = n - num_train
    return perm[:num_train], perm[num_train : num_train + num_test]


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each code dimension into `num_bins` equal-width bins over its range, as disentanglement_lib's
    histogram discretizer: (N, D) int."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        out[:, i] = np.digitize(codes[:, i], edges)
    return out


def mutual_information(a: Any, b: Any) -> float:
    """I(a; b) in nats of two discrete variables (N,) from their empirical joint distribution."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * (np.log(p[nz]) - np.log((pa @ pb)[nz]))))


def entropy(a: Any) -> float:
    """H(a) in nats of a discrete variable (N,): I(a; a)."""
    return mutual_information(a, a)


def mig_per_factor(
    codes: Any, factors: Any, num_train: int = NUM_TRAIN, num_bins: int = NUM_BINS, seed: int = 0
) -> np.ndarray:
    """Each factor's Mutual Information Gap (F,), in [0, 1]: the gap between the two code dimensions
    with the highest mutual information with the factor, divided by its entropy; :func:`mig` is their
    mean. It tells which factors a code separates. Protocol as :func:`mig`."""
    c, f = _check(codes, factors)
    c, y = _canonical(c, f)
    idx = _draw(len(c), num_train, np.random.default_rng(seed))
    c, y = histogram_discretize(c[idx], num_bins), y[idx]
    m = np.array([[mutual_information(c[:, i], y[:, j]) for j in range(y.shape[1])] for i in range(c.shape[1])])
    h = np.array([entropy(y[:, j]) for j in range(y.shape[1])])
    if m.shape[0] < 2:
        gap = m[0]
    else:
        top = np.sort(m, axis=0)[::-1]
        gap = top[0] - top[1]
    return np.divide(gap, h, out=np.zeros_like(h), where=h > 0)


def mig(codes: Any, factors: Any, num_train: int = NUM_TRAIN, num_bins: int = NUM_BINS, seed: int = 0) -> float:
    """The Mutual Information Gap (Chen et al. 2018), in [0, 1].

    For each factor, the gap between the two code dimensions with the highest mutual information
    with it, divided by the factor's entropy; averaged over the factors (:func:`mig_per_factor`).
    Protocol (disentanglement_lib): `num_train` = 10,000 points; codes discretised into `num_bins` =
    20 equal-width bins per dimension.
    """
    return float(np.mean(mig_per_factor(codes, factors, num_train, num_bins, seed)))


def sap(codes: Any, factors: Any, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST, seed: int = 0) -> float:
    """The Separated Attribute Predictability score (Kumar et al. 2018), in [0, 1].

    For each (code dimension, factor), the test accuracy of a linear SVM (C = 0.01, balanced class
    weights) that predicts the factor from that one dimension; for each factor, the gap between the
    two best dimensions; averaged over the factors. Protocol (disentanglement_lib, discrete factors):
    `num_train` = 10,000 and `num_test` = 5,000 points.
    """
    from sklearn.svm import LinearSVC

    c, f = _check(codes, factors)
    c, y = _canonical(c, f)
    tr, te = _split(len(c), num_train, num_test, np.random.default_rng(seed))
    score = np.zeros((c.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        if len(np.unique(y[tr, j])) < 2:
            continue  # a constant factor is predicted by any dimension: no gap
        for i in range(c.shape[1]):
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(c[tr, i : i + 1], y[tr, j])
            score[i, j] = np.mean(clf.predict(c[te, i : i + 1]) == y[te, j])
    if score.shape[0] < 2:
        return 0.0
    top = np.sort(score, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def dci(
    codes: Any, factors: Any, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST, seed: int = 0
) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    A gradient-boosted tree classifier (scikit-learn's defaults) per factor predicts it from all
    codes; its feature importances form the matrix R (D, F). Disentanglement: 1 - the entropy (base
    F) of each code's row of R, weighted by the code's share of R. Completeness: 1 - the entropy
    (base D) of each factor's column, weighted likewise. Informativeness: the classifiers' mean
    accuracy on the training and test points. Protocol (disentanglement_lib): `num_train` = 10,000
    and `num_test` = 5,000 points. Returns a dict with disentanglement, completeness,
    informativeness_train, informativeness_test.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    c, f = _check(codes, factors)
    c, y = _canonical(c, f)
    tr, te = _split(len(c), num_train, num_test, np.random.default_rng(seed))
    r = np.zeros((c.shape[1], y.shape[1]))
    acc_train, acc_test = [], []
    for j in range(y.shape[1]):
        if len(np.unique(y[tr, j])) < 2:  # nothing to predict: no importance, perfect accuracy
            acc_train.append(1.0)
            acc_test.append(1.0)
            continue
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(c[tr], y[tr, j])
        r[:, j] = np.abs(model.feature_importances_)
        acc_train.append(float(np.mean(model.predict(c[tr]) == y[tr, j])))
        acc_test.append(float(np.mean(model.predict(c[te]) == y[te, j])))
    return {
        "disentanglement": _weighted_one_minus_entropy(r),
        "completeness": _weighted_one_minus_entropy(r.T),
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
    }


def _weighted_one_minus_entropy(r: np.ndarray) -> float:
    """sum_i w_i (1 - H_base(K)(row i / its sum)), w_i = row i's share of r; r (I, K) >= 0."""
    k = r.shape[1]
    if k < 2:
        return 1.0
    total = r.sum()
    weights = r.sum(1) / total if total > 0 else np.full(r.shape[0], 1.0 / r.shape[0])
    p = (r + 1e-11) / (r + 1e-11).sum(1, keepdims=True)
    h = -(p * np.log(p)).sum(1) / np.log(k)
    return float(np.sum(weights * (1.0 - h)))


def _rows_by_value(y: np.ndarray) -> list[list[np.ndarray]]:
    """For each factor j and class v, the rows whose factor j is v."""
    return [[np.flatnonzero(y[:, j] == v) for v in range(y[:, j].max() + 1)] for j in range(y.shape[1])]


def beta_vae_score(
    codes: Any,
    factors: Any,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_TEST,
    seed: int = 0,
) -> dict[str, float]:
    """The β-VAE score (Higgins et al. 2017): accuracy of a linear classifier that tells which factor
    two observations share, from their codes.

    One training point: a factor k at random; `batch_size` = 64 pairs of observations that share
    factor k's value (the rest drawn freely); the feature is the mean over the pairs of |code_1 -
    code_2| (D,), and the label is k. A logistic regression (scikit-learn's defaults) learns from
    `num_train` = 10,000 such points and is scored on `num_eval` = 5,000 more (disentanglement_lib).
    Returns train_accuracy and eval_accuracy.
    """
    from sklearn.linear_model import LogisticRegression

    c, f = _check(codes, factors)
    c, y = _canonical(c, f)
    rng = np.random.default_rng(seed)
    rows = _rows_by_value(y)
    usable = [j for j in range(y.shape[1]) if len(rows[j]) > 1]

    def points(num: int) -> tuple[np.ndarray, np.ndarray]:
        feats = np.zeros((num, c.shape[1]))
        labels = rng.choice(usable, size=num) if usable else np.zeros(num, dtype=np.int64)
        for t, k in enumerate(labels):
            first = rng.integers(len(c), size=batch_size)
            same = [rows[k][y[i, k]] for i in first]
            second = np.array([s[rng.integers(len(s))] for s in same])
            feats[t] = np.abs(c[first] - c[second]).mean(0)
        return feats, labels

    x_train, k_train = points(num_train)
    x_eval, k_eval = points(num_eval)
    if len(np.unique(k_train)) < 2:
        return {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    clf = LogisticRegression(random_state=seed, max_iter=1000)
    clf.fit(x_train, k_train)
    return {
        "train_accuracy": float(np.mean(clf.predict(x_train) == k_train)),
        "eval_accuracy": float(np.mean(clf.predict(x_eval) == k_eval)),
    }


def factor_vae_score(
    codes: Any,
    factors: Any,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_TEST,
    num_variance_estimate: int = NUM_TRAIN,
    prune_threshold: float = PRUNE_THRESHOLD,
    seed: int = 0,
) -> dict[str, float]:
    """The FactorVAE score (Kim & Mnih 2018): accuracy of a majority-vote classifier that names the
    factor held fixed in a batch from the code dimension that varies least.

    Codes are divided by their standard deviation over `num_variance_estimate` = 10,000 points;
    dimensions whose standard deviation is below `prune_threshold` = 0.05 (collapsed to the prior)
    are left out. One vote: a factor k at random, `batch_size` = 64 observations sharing a value of
    k, and the kept dimension with the least variance among them. Each dimension's majority factor
    over `num_train` = 10,000 votes is the classifier; it is scored on `num_eval` = 5,000 more
    (disentanglement_lib). Returns train_accuracy, eval_accuracy and num_active_dims.
    """
    c, f = _check(codes, factors)
    c, y = _canonical(c, f)
    rng = np.random.default_rng(seed)
    var = np.var(c[_draw(len(c), num_variance_estimate, rng)], axis=0, ddof=1)
    active = np.sqrt(var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    rows = _rows_by_value(y)
    keep = np.flatnonzero(active)

    def votes(num: int) -> np.ndarray:
        v = np.zeros((y.shape[1], c.shape[1]), dtype=np.int64)
        for _ in range(num):
            k = int(rng.integers(y.shape[1]))
            value_rows = rows[k][y[rng.integers(len(c)), k]]
            batch = c[value_rows[rng.integers(len(value_rows), size=batch_size)]]
            local = np.var(batch, axis=0, ddof=1)
            v[k, keep[np.argmin(local[keep] / var[keep])]] += 1
        return v

    train_votes, eval_votes = votes(num_train), votes(num_eval)
    classifier = np.argmax(train_votes, axis=0)  # each dimension's majority factor
    cols = np.arange(c.shape[1])
    return {
        "train_accuracy": float(train_votes[classifier, cols].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, cols].sum() / eval_votes.sum()),
        "num_active_dims": int(active.sum()),
    }
