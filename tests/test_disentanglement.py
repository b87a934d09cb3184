"""The disentanglement metrics against known answers: a representation equal to the factors scores
near the top, a rotation of it clearly lower, independent noise near 0; mutual information equals
hand-computed values; and no result depends on the order of the rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaelab.analysis import disentanglement as dis
from vaelab.errors import ConfigError

SMALL = {"num_train": 2000}  # fewer points than disentanglement_lib's 10,000: same answers, faster


def grid(repeats: int = 20, seed: int = 0) -> np.ndarray:
    """Every combination of 3 factors with 4, 5 and 6 values, `repeats` times, shuffled: (N, 3)."""
    axes = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    f = np.stack([a.reshape(-1) for a in axes], 1)
    f = np.repeat(f, repeats, 0)
    return f[np.random.default_rng(seed).permutation(len(f))]


def aligned(f: np.ndarray, seed: int = 1) -> np.ndarray:
    """Codes that are the factors (scaled to comparable ranges) plus a little noise."""
    rng = np.random.default_rng(seed)
    return f / f.max(0) + 0.01 * rng.standard_normal(f.shape)


def rotated(codes: np.ndarray, seed: int = 2) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((codes.shape[1],) * 2))
    return codes @ q


def noise(f: np.ndarray, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(f.shape)


# -- mutual information on small tables ---------------------------------------------------------


def test_mutual_information_equals_hand_computed_values():
    # independent: I = 0; equal: I = H = log 2; a 2x2 table with p(0,0)=1/2, p(0,1)=p(1,0)=1/4... by hand
    assert dis.mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert dis.mutual_information([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(math.log(2))
    assert dis.entropy([0, 0, 0, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    a = [0, 0, 0, 0, 1, 1, 1, 1]
    b = [0, 0, 0, 1, 1, 1, 0, 0]  # joint: p00 = 3/8, p01 = 1/8, p10 = 2/8, p11 = 2/8
    p = {(0, 0): 3 / 8, (0, 1): 1 / 8, (1, 0): 2 / 8, (1, 1): 2 / 8}
    pa, pb = {0: 0.5, 1: 0.5}, {0: 5 / 8, 1: 3 / 8}
    want = sum(v * math.log(v / (pa[i] * pb[j])) for (i, j), v in p.items())
    assert dis.mutual_information(a, b) == pytest.approx(want, rel=1e-12)
    assert dis.mutual_information(["x", "x", "y", "y"], [3.5, 3.5, -1.0, -1.0]) == pytest.approx(math.log(2))


def test_mutual_information_agrees_with_scikit_learn():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 500), rng.integers(0, 3, 500)
    b = np.where(rng.random(500) < 0.5, a % 3, b)
    assert dis.mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), rel=1e-10)


def test_histogram_discretize_bins_each_dimension_over_its_range():
    codes = np.array([[0.0, 10.0], [0.5, 10.0], [1.0, 20.0]])
    np.testing.assert_array_equal(dis.histogram_discretize(codes, 2), [[1, 1], [2, 1], [2, 2]])


# -- the metrics on known representations -------------------------------------------------------


def test_mig_per_factor_names_the_factor_a_code_separates_and_mig_is_their_mean():
    """Codes that hold factor 0 in one dimension (and noise): factor 0's gap is near 1, the others'
    near 0. Held in two dimensions, factor 0 has no gap: both are equally informative."""
    f = grid()
    only_first = np.concatenate([aligned(f)[:, :1], noise(f)[:, :2]], 1)
    each = dis.mig_per_factor(only_first, f, **SMALL)
    assert each.shape == (3,) and each[0] >= 0.9 and (each[1:] < 0.05).all(), each
    assert dis.mig(only_first, f, **SMALL) == pytest.approx(each.mean(), abs=1e-12)
    twice = np.concatenate([aligned(f, seed=1)[:, :1], aligned(f, seed=4)[:, :1], noise(f)[:, :1]], 1)
    assert dis.mig_per_factor(twice, f, **SMALL)[0] < 0.1


def test_mig_is_near_one_for_the_factors_lower_for_a_rotation_and_zero_for_noise():
    f = grid()
    top, rot, none = (dis.mig(c, f, **SMALL) for c in (aligned(f), rotated(aligned(f)), noise(f)))
    assert top >= 0.9
    assert rot < top - 0.3
    assert none < 0.05


def test_dci_disentanglement_and_completeness_follow_the_same_order():
    f = grid()
    top, rot, none = (dis.dci(c, f, num_train=1500, num_test=500) for c in (aligned(f), rotated(aligned(f)), noise(f)))
    assert top["disentanglement"] >= 0.9 and top["completeness"] >= 0.9 and top["informativeness_test"] >= 0.95
    assert rot["disentanglement"] < top["disentanglement"] - 0.2
    assert none["disentanglement"] < 0.2 and none["informativeness_test"] < 0.5


def test_sap_is_clearly_positive_for_the_factors_lower_for_a_rotation_and_near_zero_for_noise():
    # A linear SVM on one dimension tells 4-6 classes apart only in part (one threshold per class),
    # so even the factors themselves score well below 1; disentanglement_lib's SAP values are small too.
    f = grid()
    kw = {"num_train": 1500, "num_test": 500}
    top, rot, none = (dis.sap(c, f, **kw) for c in (aligned(f), rotated(aligned(f)), noise(f)))
    assert top > 0.15
    assert rot < top
    assert none < 0.05


def test_beta_vae_and_factor_vae_scores_tell_the_fixed_factor():
    f = grid()
    kw = {"num_train": 300, "num_eval": 200}
    assert dis.beta_vae_score(aligned(f), f, **kw)["eval_accuracy"] >= 0.95
    assert dis.factor_vae_score(aligned(f), f, **kw)["eval_accuracy"] >= 0.95
    # noise: the fixed factor cannot be told apart from the others, so about chance (1/3)
    assert dis.beta_vae_score(noise(f), f, **kw)["eval_accuracy"] < 0.6
    assert dis.factor_vae_score(noise(f), f, **kw)["eval_accuracy"] < 0.6


def test_factor_vae_score_leaves_collapsed_dimensions_out():
    f = grid()
    codes = np.column_stack([aligned(f), np.zeros(len(f)), 1e-3 * noise(f)[:, :1]])  # 2 collapsed dims
    r = dis.factor_vae_score(codes, f, num_train=200, num_eval=100)
    assert r["num_active_dims"] == 3 and r["eval_accuracy"] >= 0.95


@pytest.mark.parametrize("metric", ["mig", "sap", "dci", "beta_vae_score", "factor_vae_score"])
def test_no_result_depends_on_the_order_of_the_rows(metric):
    f = grid(repeats=6)
    codes = rotated(aligned(f)) + 0.05 * noise(f)
    fn = getattr(dis, metric)
    kw = {"mig": SMALL, "sap": {"num_train": 400, "num_test": 200}, "dci": {"num_train": 300, "num_test": 200}}.get(
        metric, {"num_train": 100, "num_eval": 50}
    )
    perm = np.random.default_rng(5).permutation(len(f))
    assert fn(codes[perm], f[perm], **kw) == fn(codes, f, **kw)


def test_factor_values_and_classes_give_the_same_scores():
    f = grid(repeats=6)
    values = np.column_stack([0.5 + 0.1 * f[:, 0], np.exp(f[:, 1]), 3.0 * f[:, 2] - 7])  # increasing in each factor
    c = aligned(f)
    assert dis.mig(c, values, **SMALL) == dis.mig(c, f, **SMALL)
    np.testing.assert_array_equal(dis.discretize_factors(values), f)


def test_bad_inputs_are_named():
    f = grid(repeats=1)
    with pytest.raises(ConfigError, match="rows"):
        dis.mig(np.zeros((10, 2)), f)
    with pytest.raises(ConfigError, match="2-D"):
        dis.mig(np.zeros(len(f)), f)
    with pytest.raises(ConfigError, match="NaN"):
        dis.mig(np.full((len(f), 2), np.nan), f)
