"""FactorVAE's discriminator (Kim & Mnih 2018): tells codes z ~ q(z) from codes whose dimensions
were shuffled independently over the batch (draws of prod_d q(z_d)). Its logit difference
estimates the total correlation, log q(z) / prod_d q(z_d), by the density-ratio trick.

It is a training-time helper, not part of the model: fit() builds it with its own Adam for
objective "factor", and both go into the training checkpoint (not into model.safetensors).
Architecture and optimizer as in disentanglement_lib: 6 hidden layers of 1000 units, leaky ReLU
(slope 0.2), two logits; Adam with lr 1e-4, betas (0.5, 0.9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISC_BETAS = (0.5, 0.9)


class FactorDiscriminator(nn.Module):
    """An MLP from codes (B, D) to logits (B, 2): class 0 "drawn from q(z)", class 1 "permuted"."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6):
        super().__init__()
        sizes = [latent_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], 2))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def permute_dims(z: Tensor, u: Tensor) -> Tensor:
    """Shuffle each column of z (B, D) over the batch by its own permutation, argsort of the uniform
    draws u (B, D) (drawn by the caller from its generator, so that a resumed run repeats them)."""
    return z.gather(0, torch.argsort(u, dim=0))


def discriminator_loss(disc: FactorDiscriminator, z: Tensor, u: Tensor) -> Tensor:
    """Cross-entropy of the discriminator on the codes z (B, D) (class 0) and on their shuffle by
    u (class 1), (B,) nats: 0.5 (CE(D(z_i), 0) + CE(D(perm(z)_i), 1)). z is detached here: this loss
    trains the discriminator alone."""
    z = z.detach()
    real = disc(z)
    fake = disc(permute_dims(z, u))
    zeros = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return 0.5 * (F.cross_entropy(real, zeros, reduction="none") + F.cross_entropy(fake, zeros + 1, reduction="none"))
