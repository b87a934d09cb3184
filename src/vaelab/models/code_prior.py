"""A learned prior over a VQ-VAE's grid of codes: a small causal transformer (decoder-only).

p(c) = prod_i p(c_i | c_<i) over the H' x W' codes in raster order (row by row). We use a
transformer rather than a gated PixelCNN (van den Oord et al. 2016) because a causal attention mask
gives every position the whole past with no blind spot and no masked-convolution stacks to get
right, and the sequences are short (7 x 7 = 49 codes for MNIST, 8 x 8 = 64 for 32 x 32 images), so
attention's quadratic cost is small. A start token stands before the first code; positions have
learned embeddings; there is no dropout, so training on CPU is deterministic.

`log_prob(codes)` is in nats per grid (B,); `sample(n, generator)` draws grids autoregressively.
Until `vaelab train-prior` has fitted it (`trained` is False), the model uses the uniform prior
over the codes instead (VQ-VAE's training prior: log p(c) = -H' W' log K).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CodePrior(nn.Module):
    """p(codes) over a (H', W') grid of indices in 0..K-1."""

    trained: Tensor
    mask: Tensor

    def __init__(self, num_codes: int, grid: tuple[int, int], layers: int = 4, width: int = 128, heads: int = 4):
        super().__init__()
        self.num_codes, self.grid = num_codes, grid
        self.length = grid[0] * grid[1]
        self.embed = nn.Embedding(num_codes + 1, width)  # the last index is the start token
        self.position = nn.Parameter(torch.zeros(self.length, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, num_codes)
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(self.length), persistent=False)

    @property
    def is_trained(self) -> bool:
        return bool(self.trained)

    def logits(self, codes: Tensor) -> Tensor:
        """Logits of p(c_i | c_<i) at every position: codes (B, L) -> (B, L, K)."""
        b, n = codes.shape
        start = torch.full((b, 1), self.num_codes, dtype=torch.long, device=codes.device)
        tokens = torch.cat([start, codes[:, :-1]], 1)  # shifted right: position i sees c_<i only
        h = self.embed(tokens) + self.position[:n]
        h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
        return self.out(self.norm(h))

    def log_prob(self, codes: Tensor) -> Tensor:
        """log p(codes), nats: codes (B, H', W') int64 -> (B,). Uniform until trained."""
        flat = codes.flatten(1)
        if not self.is_trained:
            return torch.full((len(flat),), -flat.shape[1] * math.log(self.num_codes), device=codes.device)
        logp = F.log_softmax(self.logits(flat).float(), -1)
        return logp.gather(2, flat[..., None])[..., 0].sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """n code grids (n, H', W'), drawn position by position (uniform codes until trained)."""
        device = self.out.weight.device
        if not self.is_trained:
            codes = torch.randint(self.num_codes, (n, self.length), generator=generator, device=device)
            return codes.view(n, *self.grid)
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for i in range(self.length):
            probs = F.softmax(self.logits(codes[:, : i + 1])[:, i].float() / temperature, -1)
            codes[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes.view(n, *self.grid)
