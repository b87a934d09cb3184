"""The vector quantizer of VQ-VAE: nearest codes, straight-through gradients, the EMA update on a
case computed by hand, k-means initialisation, dead-code restarts, perplexity, and its state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from vaelab.models.quantizer import VectorQuantizer


def grid(flat: torch.Tensor) -> torch.Tensor:
    """(N, D) vectors as a (1, D, 1, N) grid."""
    return flat.t()[None, :, None, :]


def test_the_ema_update_matches_the_formula_on_a_small_case():
    vq = VectorQuantizer(2, 1, decay=0.5, eps=0.0, dead_threshold=0.0)
    vq.codebook_vectors.copy_(torch.tensor([[0.0], [10.0]]))
    vq.ema_sum.copy_(torch.tensor([[0.0], [10.0]]))
    vq.initialised.fill_(True)
    out = vq(grid(torch.tensor([[1.0], [2.0], [9.0]])))
    assert out.codes.flatten().tolist() == [0, 0, 1]
    # by hand: N = 0.5 [1, 1] + 0.5 [2, 1] = [1.5, 1]; m = 0.5 [0, 10] + 0.5 [3, 9] = [1.5, 9.5]; e = m / N
    assert_close(vq.ema_count, torch.tensor([1.5, 1.0]))
    assert_close(vq.codebook_vectors, torch.tensor([[1.0], [9.5]]))
    assert_close(out.z_q.flatten(), torch.tensor([0.0, 0.0, 10.0]))  # the codes before the update


def test_z_q_and_the_losses_use_the_codebook_before_the_ema_step():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 3, decay=0.9, dead_threshold=0.0)
    vq(torch.randn(4, 3, 2, 2))  # initialise (k-means, then one EMA step)
    old = copy.deepcopy(vq)  # the codebook before the next forward
    z = torch.randn(4, 3, 2, 2) + 0.3
    out = vq(z)
    assert not torch.equal(vq.codebook_vectors, old.codebook_vectors)  # the EMA step moved the codes
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    codes = old.nearest(flat)
    assert torch.equal(out.codes.flatten(), codes)
    # exactly the straight-through value z_e + (e - z_e) of the old codes (e itself up to rounding)
    z_q = out.z_q.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(z_q, flat + (old.codebook_vectors[codes] - flat))
    assert_close(z_q, old.codebook_vectors[codes], rtol=0, atol=1e-6)
    assert (vq.codebook_vectors[codes] - old.codebook_vectors[codes]).abs().max() > 1e-3  # the new codes are not
    by_hand = 0.25 * (flat - old.codebook_vectors[codes]).pow(2).sum(1).view(4, 4).sum(1)
    assert_close(out.commitment, by_hand)


def test_a_code_restarted_in_the_step_it_wins_a_position_still_quantizes_it_to_the_old_code():
    torch.manual_seed(3)  # the restart then picks the first vector, not the one that won code 1
    vq = VectorQuantizer(2, 1, decay=0.5, dead_threshold=0.5)  # dead: usage below 0.5 / 2 = 0.25
    vq.codebook_vectors.copy_(torch.tensor([[0.0], [10.0]]))
    vq.ema_sum.copy_(vq.codebook_vectors)
    vq.usage.copy_(torch.tensor([0.95, 0.05]))  # code 1 is dying
    vq.initialised.fill_(True)
    data = torch.tensor([[0.5], [0.25], [-0.5], [9.0]])
    out = vq(grid(data))
    assert out.codes.flatten().tolist() == [0, 0, 0, 1]  # the last position won code 1 ...
    # ... whose usage 0.5 * 0.05 + 0.5 * 1/4 = 0.15 fell below 0.25: restarted at a vector of the batch
    assert float(vq.codebook_vectors[1]) == 0.5 and float(vq.ema_count[1]) == 1.0
    # z_q is the code the position was assigned to, 10, not the restarted one (nor the EMA-moved code 0)
    assert out.z_q.flatten().tolist() == [0.0, 0.0, 0.0, 10.0]
    # by hand from the old codebook: 0.25 * (0.5^2 + 0.25^2 + 0.5^2 + 1^2) = 0.25 * 1.5625
    assert_close(out.commitment, torch.tensor([0.390625]))


def test_laplace_smoothing_keeps_an_unused_code_finite():
    vq = VectorQuantizer(3, 2, decay=0.0, eps=1e-5, dead_threshold=0.0)
    vq.initialised.fill_(True)
    vq.codebook_vectors.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]]))
    vq(grid(torch.tensor([[0.1, 0.0], [4.9, 5.1]])))
    assert torch.isfinite(vq.codebook_vectors).all()  # code 2 won nothing: N_2 = eps-smoothed, not 0


def test_codes_are_the_nearest_and_gradients_pass_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4).eval()
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = vq(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, vq.codebook_vectors).argmin(1)
    assert out.codes.flatten().tolist() == brute.tolist()
    assert_close(out.z_q.permute(0, 2, 3, 1).reshape(-1, 4), vq.codebook_vectors[brute])
    out.z_q.sum().backward()
    assert_close(z.grad, torch.ones_like(z))  # d z_q / d z_e = I
    assert out.commitment.shape == (2,) and (out.codebook == 0).all()  # EMA: no codebook loss


def test_without_ema_the_codebook_loss_trains_the_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, ema=False).eval()
    assert isinstance(vq.codebook_vectors, torch.nn.Parameter)
    out = vq(torch.randn(3, 2, 2, 2))
    out.codebook.sum().backward()
    assert vq.codebook_vectors.grad is not None and vq.codebook_vectors.grad.abs().sum() > 0


def test_kmeans_initialisation_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 8.0]])
    flat = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centres])
    vq = VectorQuantizer(3, 2, dead_threshold=0.0)
    vq(grid(flat))  # training mode: k-means on the first batch, then one EMA step
    found = sorted(vq.codebook_vectors.tolist())
    for want, got in zip(sorted(centres.tolist()), found):
        assert_close(torch.tensor(got), torch.tensor(want), atol=0.1, rtol=0)
    assert bool(vq.initialised)


def test_perplexity_is_the_number_of_codes_for_uniform_use_and_one_for_a_single_code():
    vq = VectorQuantizer(4, 1).eval()
    vq.codebook_vectors.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    assert float(vq(grid(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))).perplexity) == pytest.approx(4.0)
    assert float(vq(grid(torch.tensor([[0.1], [0.0], [-0.2]]))).perplexity) == pytest.approx(1.0)


def test_a_dead_code_is_restarted_at_an_encoder_output():
    torch.manual_seed(0)
    vq = VectorQuantizer(2, 1, decay=0.5, dead_threshold=0.5)  # dead: usage below 0.5 / 2 = 0.25
    vq.codebook_vectors.copy_(torch.tensor([[0.0], [1000.0]]))  # code 1 is far from every vector
    vq.ema_sum.copy_(vq.codebook_vectors)
    vq.initialised.fill_(True)
    data = torch.tensor([[0.1], [0.2], [-0.1], [0.3]])
    vq(grid(data))  # usage of code 1: 0.5 * 0.5 + 0.5 * 0 = 0.25, not below 0.25 yet
    assert float(vq.codebook_vectors[1]) == pytest.approx(1000.0, rel=1e-4)  # moved only by the smoothing
    vq(grid(data))  # 0.125: dead, restarted at one of this batch's vectors
    assert float(vq.codebook_vectors[1]) in data.flatten().tolist()
    assert float(vq.usage[1]) == pytest.approx(0.5) and float(vq.ema_count[1]) == 1.0


def test_the_state_is_in_the_state_dict_and_replays_identically():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3)
    keys = set(vq.state_dict())
    assert {"codebook_vectors", "ema_count", "ema_sum", "usage", "initialised"} <= keys
    z = torch.randn(4, 3, 2, 2)
    vq(z)  # initialise
    twin = copy.deepcopy(vq)
    state = torch.get_rng_state()
    a = vq(z * 1.1)
    torch.set_rng_state(state)
    b = twin(z * 1.1)
    assert torch.equal(a.codes, b.codes) and torch.equal(vq.codebook_vectors, twin.codebook_vectors)
