"""Vector quantization (van den Oord et al. 2017, "Neural Discrete Representation Learning").

A codebook of K codes e_k in R^D replaces each encoder output z_e (a D-vector at every position of
a spatial grid) by its nearest code. Gradients pass straight through (z_q = z_e + sg(e - z_e)),
and the encoder is held near its codes by the commitment loss beta ||z_e - sg(e)||^2 (beta = 0.25).

The codes learn in one of two ways:
- `ema=True` (the paper's appendix, the default): exponential moving averages of how many vectors
  each code won and of their sum, with Laplace smoothing of the counts:
      N_k <- g N_k + (1 - g) n_k,   m_k <- g m_k + (1 - g) sum_{i -> k} z_i,
      N_k <- (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j,   e_k = m_k / N_k;
- `ema=False`: the codebook loss ||sg(z_e) - e||^2, trained by the optimizer.

Before the first update the codes are set by k-means on the first batch(es) of encoder outputs
(`kmeans_iters` Lloyd steps from a random pick of the vectors), and a code whose usage (an EMA of
its share of the assignments) falls below `dead_threshold` / K is restarted at a random encoder
output of the current batch. The EMA step and the restarts come after the step's quantization:
z_q and the commitment and codebook losses use the codes the positions were assigned to, as they
were before this step's update (as Sonnet's VectorQuantizerEMA and vector-quantize-pytorch do; the
paper does not say), so a code restarted in the same step cannot hand its positions an unrelated
vector. All the state (codes, EMA counts and sums, usage, whether the codebook was initialised) is
in buffers, so it is in the checkpoint, and every random choice uses torch's global generator,
whose state the checkpoint keeps too: resume is bit-identical on CPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Quantized(NamedTuple):
    z_q: Tensor  # (B, D, H, W): the codes, with straight-through gradients to z_e
    codes: Tensor  # (B, H, W) int64: the index of each position's code
    commitment: Tensor  # (B,): beta * ||z_e - sg(e)||^2 summed over the positions
    codebook: Tensor  # (B,): ||sg(z_e) - e||^2 summed over the positions (0 with EMA updates)
    perplexity: Tensor  # (): exp(entropy of the batch's code usage), between 1 and K
    used: Tensor  # (): how many of the K codes the batch uses


class VectorQuantizer(nn.Module):
    """K codes of D dimensions, applied at every position of a (B, D, H, W) grid."""

    codebook_vectors: Tensor
    ema_count: Tensor
    ema_sum: Tensor
    usage: Tensor
    initialised: Tensor

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_iters: int = 10,
        dead_threshold: float = 0.03,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta, self.ema = num_codes, dim, beta, ema
        self.decay, self.eps, self.kmeans_iters, self.dead_threshold = decay, eps, kmeans_iters, dead_threshold
        init = torch.randn(num_codes, dim) / dim**0.5
        if ema:
            self.register_buffer("codebook_vectors", init)
        else:
            self.codebook_vectors = nn.Parameter(init)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", init.clone())
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: Tensor) -> Tensor:
        """The index of the nearest code (squared Euclidean distance) of each row of flat (N, D)."""
        e = self.codebook_vectors
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]  # (N, K)
        return d.argmin(1)

    @torch.no_grad()
    def kmeans_init(self, flat: Tensor) -> None:
        """Set the codes by k-means on the vectors flat (N, D): K of them at random, then Lloyd steps."""
        n = len(flat)
        pick = (
            torch.randint(n, (self.num_codes,), device=flat.device)
            if n < self.num_codes
            else torch.randperm(n, device=flat.device)[: self.num_codes]
        )
        codes = flat[pick].clone()
        for _ in range(self.kmeans_iters):
            d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
            assign = d.argmin(1)
            counts = torch.bincount(assign, minlength=self.num_codes).to(flat.dtype)
            sums = torch.zeros_like(codes).index_add_(0, assign, flat)
            filled = counts > 0
            codes[filled] = sums[filled] / counts[filled, None]
        self.codebook_vectors.data.copy_(codes)
        self.ema_sum.copy_(codes)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: Tensor, codes: Tensor) -> None:
        """One EMA step of the counts and sums from the assignments codes (N,) of flat (N, D)."""
        one_hot = torch.zeros(len(flat), self.num_codes, device=flat.device, dtype=flat.dtype)
        one_hot.scatter_(1, codes[:, None], 1.0)
        n_k = one_hot.sum(0)  # (K,)
        self.ema_count.mul_(self.decay).add_(n_k, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook_vectors.data.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead(self, flat: Tensor, n_k: Tensor) -> int:
        """Move the codes whose usage fell below dead_threshold / K to random vectors of flat; returns how many."""
        self.usage.mul_(self.decay).add_(n_k / n_k.sum(), alpha=1 - self.decay)
        dead = self.usage < self.dead_threshold / self.num_codes
        count = int(dead.sum())
        if count:
            new = flat[torch.randint(len(flat), (count,), device=flat.device)]
            self.codebook_vectors.data[dead] = new
            self.ema_sum[dead] = new
            self.ema_count[dead] = 1.0
            self.usage[dead] = 1.0 / self.num_codes
        return count

    def forward(self, z_e: Tensor) -> Quantized:
        """Quantize z_e (B, D, H, W); in training mode also update the codebook (EMA, restarts)."""
        b, d, h, w = z_e.shape
        if d != self.dim:
            raise ValueError(f"the encoder gives {d} channels, the codebook has {self.dim}-dimensional codes")
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D)
        if self.training and not bool(self.initialised):
            self.kmeans_init(flat.detach())
        codes = self.nearest(flat.detach())
        n_k = torch.bincount(codes, minlength=self.num_codes).to(flat.dtype)
        # (B*H*W, D): the codes that won, read before this step's EMA update and restarts (as Sonnet's
        # VectorQuantizerEMA does), so z_q and the losses use the codebook the assignment was made with;
        # indexing copies, so the in-place updates below leave q alone
        q = self.codebook_vectors[codes]
        if self.training:
            if self.ema:
                self.ema_update(flat.detach(), codes)
            self.restart_dead(flat.detach(), n_k)
        per_pos = (flat - q.detach()).pow(2).sum(1).view(b, h * w)
        commitment = self.beta * per_pos.sum(1)
        codebook = (
            torch.zeros(b, device=z_e.device, dtype=z_e.dtype)
            if self.ema
            else (flat.detach() - q).pow(2).sum(1).view(b, h * w).sum(1)
        )
        z_q = flat + (q - flat).detach()  # straight-through: the forward value is q, the gradient flows to z_e
        p = n_k / n_k.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
        return Quantized(
            z_q.view(b, h, w, d).permute(0, 3, 1, 2),
            codes.view(b, h, w),
            commitment,
            codebook,
            perplexity,
            (n_k > 0).sum().to(flat.dtype),
        )
