"""VQ-VAE (van den Oord et al. 2017): a grid of discrete codes between a conv encoder and decoder.

    x -> GridEncoder -> z_e (B, D, H', W') -> nearest of K codes -> z_q -> GridDecoder -> p(x|z_q)

q(z|x) is a point mass on the nearest codes, so log q(z|x) = 0 and KL(q || p) = -log p(z_q): the
ELBO log p(x|z_q) + log p(z_q) is a lower bound on log p(x), and no number of importance samples
makes it tighter (every draw is the same). With the uniform prior that VQ-VAE trains under,
log p(z_q) = -H' W' log K, a constant; `vaelab train-prior` then fits a causal transformer over
the code grids (:mod:`vaelab.models.code_prior`), and the same bound with that prior is the NLL
that `vaelab eval` reports (marked as a bound).

Training maximises that ELBO minus the quantizer's penalty (Draws.penalty): the commitment loss
beta ||z_e - sg(e)||^2, plus the codebook loss ||sg(z_e) - e||^2 when the codes are trained by the
optimizer (codebook_update "loss") instead of by EMA (the default). Gradients pass the quantizer
straight through. The codebook, its EMA state and the code prior are buffers and parameters of
this module, so they are in model.safetensors and the checkpoint.

The flat latent z of the verbs (encode_mean, decode, sample_latents) is z_q flattened,
D * H' * W' numbers per image.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.base import BaseVAE, Draws, full
from vaelab.models.code_prior import CodePrior
from vaelab.models.networks import GridDecoder, GridEncoder
from vaelab.models.quantizer import VectorQuantizer


class VQVAE(BaseVAE):
    """The VQ-VAE of a config with posterior "vq" (and prior "uniform"): see the module docstring."""

    supports_bounds = False
    continuous_latents = False
    deterministic_posterior = True
    single_process = True
    term_names = ("commitment", "codebook_loss", "perplexity", "codes_used")
    code_prior: CodePrior
    quantizer: VectorQuantizer
    grid: tuple[int, int]

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.set_likelihood(cfg)
        encoder = GridEncoder(cfg)
        self.grid = encoder.grid
        self.encoder = encoder  # type: ignore[assignment]
        self.decoder = GridDecoder(cfg, self.likelihood.num_params)  # type: ignore[assignment]
        self.quantizer = VectorQuantizer(
            cfg.codebook_size,
            cfg.latent_dim,
            cfg.commitment,
            ema=cfg.codebook_update == "ema",
            decay=cfg.codebook_decay,
        )
        self.code_prior = CodePrior(cfg.codebook_size, self.grid, cfg.prior_layers, cfg.prior_width)
        self.code_prior.requires_grad_(False)  # fitted afterwards by `vaelab train-prior`, never by fit()

    @property
    def latent_size(self) -> int:
        return self.cfg.latent_dim * self.grid[0] * self.grid[1]

    @property
    def prior_description(self) -> str:
        return "the learned code prior" if self.code_prior.is_trained else "uniform codes (no `vaelab train-prior` yet)"

    @property
    def bound_note(self) -> str:
        prior = (
            "the learned code prior"
            if self.code_prior.is_trained
            else "the uniform code prior, -H'W' log K (run `vaelab train-prior RUN` to learn one)"
        )
        return (
            f"q(z|x) is a point mass on the nearest codes, so -log p(x) <= -log p(x|z_q) - log p(z_q): nll is "
            f"this bound (one draw: more are the same), with {prior}"
        )

    @property
    def noise_dim(self) -> int:
        return 1  # nothing is drawn: eps only says how many (identical) draws to return

    def forward(
        self, x: Tensor, y: Tensor | None = None, eps: Tensor | None = None, stop_gradient: bool = False
    ) -> Draws:
        """Encode, quantize, decode. eps (K, B, 1) only gives K: every draw is z_q."""
        self.one_hot(y, x.shape[0])  # refuses a label: this model is unconditional
        k, b = (1 if eps is None else eps.shape[0]), x.shape[0]
        q = self.quantizer(full(self.encoder(x)))
        params = full(self.decoder(q.z_q))[None]  # (1, B, P, C, H, W)
        log_px_z = self.log_px_z(x, params)  # (1, B)
        log_p_codes = self.code_prior.log_prob(q.codes).to(log_px_z.dtype)  # (B,)
        zeros = torch.zeros(k, b, device=x.device, dtype=log_px_z.dtype)
        return Draws(
            q.z_q.flatten(1)[None].expand(k, -1, -1),
            params.expand(k, *params.shape[1:]),
            log_px_z.expand(k, b),
            lambda: log_p_codes.expand(k, b),
            lambda: zeros,
            -log_p_codes,  # KL(point mass || p) = -log p(z_q)
            penalty=q.commitment + q.codebook,
            terms={
                "commitment": q.commitment,
                "codebook_loss": q.codebook,
                "perplexity": q.perplexity.expand(b),
                "codes_used": q.used.expand(b),
            },
        )

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()

    # -- the verbs ---------------------------------------------------------------------------
    def codes(self, x: Tensor) -> Tensor:
        """The code index at every grid position, (B, H', W') int64."""
        z_e = self.encoder(x)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        return self.quantizer.nearest(flat).view(x.shape[0], *self.grid)

    def code_vectors(self, codes: Tensor) -> Tensor:
        """Codes (..., H', W') -> their flat latent z (..., D * H' * W')."""
        e = self.quantizer.codebook_vectors[codes]  # (..., H', W', D)
        return e.movedim(-1, -3).flatten(-3)

    def code_counts(self, x: Tensor) -> Tensor:
        return torch.bincount(self.codes(x).flatten(), minlength=self.cfg.codebook_size)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise ConfigError(
            "posterior vq: q(z|x) is a point mass on the nearest codes, not a Gaussian with (loc, logvar); "
            "use encode_mean for the codes' vectors, or codes() for their indices"
        )

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """z_q flattened, (B, D * H' * W'): the vectors of the nearest codes."""
        self.one_hot(y, x.shape[0])
        return self.code_vectors(self.codes(x))

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z (..., B, D * H' * W') -> parameters of p(x|z), (..., B, P, C, H, W)."""
        grid = z.reshape(*z.shape[:-1], self.cfg.latent_dim, *self.grid)
        return self.decoder(grid)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n code grids from the code prior (uniform until `vaelab train-prior`), as flat z (n, D*H'*W')."""
        return self.code_vectors(self.code_prior.sample(n, generator))
