"""Normalising flows: planar flows and inverse autoregressive flow (IAF) for the posterior q(z|x),
and masked autoregressive flow (MAF) for the flow prior (:class:`vaelab.models.priors.FlowPrior`).

In the manner of nflows (bayesiains/nflows): a transform's ``forward`` returns
``(outputs, logabsdet)`` and transforms compose by adding their log-determinants. A flow
posterior pushes a base draw z0 ~ N(loc, diag(exp(logvar))) through T steps whose parameters
come from an encoder context h (B, context_dim), so that

    log q(z_T | x) = gaussian_log_prob(z0, loc, logvar) - logabsdet.

z may carry leading sample dimensions, (K, B, D), while h is (B, context_dim): the context
broadcasts. Every flow starts near the identity, so a new flow posterior starts as its base
Gaussian: a randomly initialised flow would scramble z0 and, with it, the first KL estimates and
gradients, which is what makes early flow-VAE training unstable.

IAF and MAF are made of the same MADE layers and differ in direction (as Papamakarios et al. 2017
relate them): an IAF step's fast pass goes from noise to z (sampling a posterior), a MAF step's
from z to the noise u (the density of a prior); each inverts in D passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.models.registry import POSTERIORS, Implementations


def _constrain(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(u_hat, w.u_hat): u_hat as in constrain_u, and w.u_hat = m(w.u) computed exactly (0 at w = 0)."""
    wu = (w * u).sum(-1, keepdim=True)
    m = F.softplus(wu) - 1.0  # >= -1 in floating point too, since softplus >= 0
    w2 = w.square().sum(-1, keepdim=True)
    # The floor only matters at w = 0, where the step is a shift and u_hat = u.
    ratio = w2 / w2.clamp_min(1e-12)  # exactly 1 unless w is (nearly) 0
    return u + (m - wu) * w / w2.clamp_min(1e-12), m * ratio


def constrain_u(u: Tensor, w: Tensor) -> Tensor:
    """u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = -1 + softplus(a), so that w.u_hat > -1.

    This makes the planar step invertible. u, w: (..., D). Returns (..., D). Rezende & Mohamed
    2015, Appendix A.1.
    """
    return _constrain(u, w)[0]


def planar_transform(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One planar step f(z) = z + u_hat tanh(w.z + b). Rezende & Mohamed 2015, eq. (10)-(12).

    Args:
        z: (..., B, D) latents.
        u, w: (B, D) step parameters (u is constrained internally, see :func:`constrain_u`).
        b: (B, 1) bias.

    Returns:
        (z', logabsdet): (..., B, D) and (..., B) nats, logabsdet = log|1 + u_hat.psi(z)| with
        psi(z) = (1 - tanh^2(w.z + b)) w.
    """
    u_hat, wu_hat = _constrain(u, w)
    t = torch.tanh((z * w).sum(-1, keepdim=True) + b)  # (..., B, 1)
    # u_hat.psi = (1 - t^2) m(w.u) >= -1, so log1p never sees less than -1 (w.u_hat summed from
    # u_hat could round below -1 when m ~ -1, giving NaN), and log1p is precise near the identity.
    logabsdet = torch.log1p((1.0 - t.square()) * wu_hat).squeeze(-1)
    return z + u_hat * t, logabsdet


def planar_inverse(y: Tensor, u: Tensor, w: Tensor, b: Tensor, iters: int = 80) -> Tensor:
    """Invert one planar step by bisection on the scalar a = w.z (shapes as planar_transform).

    w.y = a + (w.u_hat) tanh(a + b) is non-decreasing in a because w.u_hat >= -1, and its root lies
    within |w.u_hat| of w.y; then z = y - u_hat tanh(a + b). Rezende & Mohamed 2015, Appendix A.1.
    For evaluation and tests: no gradient flows through the root.
    """
    u_hat, wu = _constrain(u, w)  # (B, D), (B, 1)
    with torch.no_grad():
        wy = (w * y).sum(-1, keepdim=True)  # (..., B, 1)
        lo, hi = wy - wu.abs(), wy + wu.abs()
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = mid + wu * torch.tanh(mid + b) > wy
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        a = 0.5 * (lo + hi)
    return y - u_hat * torch.tanh(a + b)


class PlanarFlows(nn.Module):
    """T amortised planar steps: one linear layer maps h (B, context_dim) to every (u, w, b).

    Args:
        dim: D, the latent size.
        steps: T, the number of planar steps.
        context_dim: size of the encoder context h.
        hidden: ignored; present so that every entry of FLOWS is built as cls(dim, steps,
            context_dim, hidden).
    """

    def __init__(self, dim: int, steps: int, context_dim: int, hidden: int | Sequence[int] | None = None):
        super().__init__()
        self.dim, self.steps = dim, steps
        self.params = nn.Linear(context_dim, steps * (2 * dim + 1))  # per step: u (D), w (D), b (1)
        with torch.no_grad():
            # Near-identity start: tiny weights make every step almost context-free, and the bias
            # puts it at u_hat = 0. With u = 0 the constraint gives w.u_hat = m(0) = -0.31, a 31%
            # squeeze along w whatever |w| is; so start at u = c w0, |w0| = 1, c = log(e - 1),
            # where m(c) = 0 and u_hat = u - c w0 = 0. Not u = w = 0: that is a saddle where the
            # gradients of u and w both vanish. w0 is random (global torch RNG) to break symmetry.
            self.params.weight.mul_(1e-2)
            w0 = F.normalize(torch.randn(steps, dim), dim=-1)
            c = math.log(math.e - 1.0)
            self.params.bias.copy_(torch.cat([c * w0, w0, torch.zeros(steps, 1)], -1).flatten())

    def step_params(self, h: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """[(u, w, b)] for each step: (B, D), (B, D), (B, 1)."""
        p = self.params(h).view(h.shape[0], self.steps, 2 * self.dim + 1)  # (B, T, 2D+1)
        d = self.dim
        return [(p[:, t, :d], p[:, t, d : 2 * d], p[:, t, 2 * d :]) for t in range(self.steps)]

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., B, D), h (B, context_dim) -> (z_T (..., B, D), sum of logabsdet (..., B) nats)."""
        total = z.new_zeros(z.shape[:-1])
        for u, w, b in self.step_params(h):
            z, logabsdet = planar_transform(z, u, w, b)
            total = total + logabsdet
        return z, total

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(z0, logabsdet) with forward(z0, h)[0] = y: z0 by bisection per step (no gradient through
        the root), logabsdet (..., B) nats of the inverse map, minus the forward's at z0."""
        total = y.new_zeros(y.shape[:-1])
        for u, w, b in reversed(self.step_params(h)):
            y = planar_inverse(y, u, w, b)
            total = total - planar_transform(y, u, w, b)[1]
        return y, total


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        # The mask follows from the sizes alone, so it stays out of state_dict.
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015), with a context.

    Sequential degrees: input d has degree d (1..D), hidden units cycle through 1..D-1 (0..D-1
    with a context; all 0 when D = 1), and a unit connects to a later layer's unit of degree k if
    k >= its degree (k > for the outputs). Output d therefore depends on z_<d only. The context
    enters through an unmasked linear map added to the first hidden layer; every output may
    depend on it, as it is not part of z.

    Args:
        dim: D.
        hidden: width of each hidden layer (an int means one layer).
        context_dim: size of h; 0 for no context.

    Returns from forward: (m, s), each (..., B, D).
    """

    def __init__(self, dim: int, hidden: int | Sequence[int] = 64, context_dim: int = 0):
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        if not widths:
            raise ValueError("MADE needs at least one hidden layer, got hidden=()")
        self.dim = dim
        # Hidden degrees cycle through 1..D-1, and also 0 when there is a context: degree-0 units
        # see no input but do see h, and are the only path from h to output 1 (without them
        # m_1, s_1 would be constants and the first dimension of every step context-free).
        low = 0 if context_dim > 0 else min(dim - 1, 1)
        degrees = [torch.arange(1, dim + 1)]
        degrees += [low + torch.arange(n) % (dim - low) for n in widths]
        self.hidden = nn.ModuleList(
            MaskedLinear(a.numel(), b.numel(), b[:, None] >= a[None, :]) for a, b in zip(degrees[:-1], degrees[1:])
        )
        out_deg = degrees[0].repeat(2)  # (2D,): m then s
        self.out = MaskedLinear(widths[-1], 2 * dim, out_deg[:, None] > degrees[-1][None, :])
        self.context = nn.Linear(context_dim, widths[0], bias=False) if context_dim > 0 else None

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.hidden[0](z)  # (..., B, H1)
        if self.context is not None and h is not None:
            x = x + self.context(h)  # (B, H1) broadcasts over the leading sample dims
        for layer in self.hidden[1:]:
            x = layer(F.elu(x))
        m, s = self.out(F.elu(x)).chunk(2, -1)  # (..., B, D) each
        return m, s


class IAFStep(nn.Module):
    """One IAF step, the LSTM-like stable form of Kingma et al. 2016, Algorithm 1.

    [m, s] = MADE(z, h); sigma = sigmoid(s + forget_bias); z' = sigma z + (1 - sigma) m;
    logabsdet = sum_d log sigma_d (the Jacobian is triangular with diagonal sigma).

    forget_bias = 2.0, the larger of the paper's "+1 or +2": it keeps sigma away from 0, where the
    step would forget z and its log-determinant would blow up. For a near-identity start the
    s head's bias also starts at +2 (sigma = sigmoid(4) = 0.98) and the output weights are tiny,
    so z' = 0.98 z + O(1e-2): without it each step would start by shrinking z by sigmoid(2) = 0.88.
    Adam's per-parameter step size offsets the smaller gradient of a sigmoid near 1.
    """

    def __init__(self, dim: int, hidden: int | Sequence[int] = 64, context_dim: int = 0, forget_bias: float = 2.0):
        super().__init__()
        self.made = MADE(dim, hidden, context_dim)
        self.forget_bias = forget_bias
        with torch.no_grad():
            self.made.out.weight.mul_(1e-2)
            self.made.out.bias.zero_()
            self.made.out.bias[dim:] = 2.0

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z (..., B, D) -> (z' (..., B, D), logabsdet (..., B) nats)."""
        m, s = self.made(z, h)
        gate = s + self.forget_bias
        sigma = torch.sigmoid(gate)
        return sigma * z + (1.0 - sigma) * m, F.logsigmoid(gate).sum(-1)

    def inverse(self, y: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Exact inverse in D passes: after pass d, z_1..z_d are final (autoregressive). Returns
        (z, logabsdet (..., B) nats of the inverse map): sigma_d depends on z_<d only, which the last
        pass already had final, so its gates are the forward's at z."""
        z = torch.zeros_like(y)
        gate = torch.zeros_like(y)
        for _ in range(y.shape[-1]):
            m, s = self.made(z, h)
            gate = s + self.forget_bias
            sigma = torch.sigmoid(gate)
            z = (y - (1.0 - sigma) * m) / sigma
        return z, -F.logsigmoid(gate).sum(-1)


class Reverse(nn.Module):
    """Reverse the order of the latent dimensions: a permutation, logabsdet 0."""

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.flip(-1), z.new_zeros(z.shape[:-1])

    def inverse(self, y: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y.flip(-1), y.new_zeros(y.shape[:-1])


class _Stack(nn.Module):
    """Transforms applied in turn, log-determinants added: ``transforms`` (an nn.ModuleList of steps
    with forward and inverse, each returning (outputs, logabsdet))."""

    transforms: nn.ModuleList

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z (..., B, D), h (B, context_dim) -> (z_T (..., B, D), sum of logabsdet (..., B) nats)."""
        total = z.new_zeros(z.shape[:-1])
        for transform in self.transforms:
            z, logabsdet = transform(z, h)
            total = total + logabsdet
        return z, total

    def inverse(self, y: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The exact inverse of forward: y (..., B, D) -> (z0, logabsdet (..., B) nats of the inverse)."""
        total = y.new_zeros(y.shape[:-1])
        for transform in reversed(self.transforms):
            y, logabsdet = cast(IAFStep | MAFStep | Reverse, transform).inverse(y, h)  # ModuleList items are Modules
            total = total + logabsdet
        return y, total


class IAF(_Stack):
    """Inverse autoregressive flow: T IAFSteps with the order reversed between steps.

    Without the reversal every step would be autoregressive in the same order, and z_1 would
    only ever be shifted and scaled by the context. A final reversal is added where needed so
    that z_T keeps z0's order. Kingma et al. 2016.

    Args:
        dim: D.
        steps: T, the number of IAF steps.
        context_dim: size of the encoder context h (0: none).
        hidden: MADE hidden width(s).
        forget_bias: see :class:`IAFStep`.
    """

    def __init__(
        self,
        dim: int,
        steps: int,
        context_dim: int,
        hidden: int | Sequence[int] | None = 64,
        forget_bias: float = 2.0,
    ):
        super().__init__()
        hidden = 64 if hidden is None else hidden
        layers: list[IAFStep | Reverse] = []
        for t in range(steps):
            if t > 0:
                layers.append(Reverse())
            layers.append(IAFStep(dim, hidden, context_dim, forget_bias))
        if steps % 2 == 0:
            # An odd number of reversals so far: undo it, so that z_T is in z0's order and the
            # flow as a whole starts near the identity, not near a permutation.
            layers.append(Reverse())
        self.transforms = nn.ModuleList(layers)


class MAFStep(nn.Module):
    """One masked autoregressive flow step (Papamakarios et al. 2017, section 3), in the density
    direction z -> u:

        [m, s] = MADE(z, h);  u = (z - m) exp(-s);  logabsdet = -sum_d s_d,

    m_d and s_d depending on z_<d only, so u is one pass and the Jacobian is triangular with diagonal
    exp(-s). The inverse z = u exp(s) + m takes D passes (after pass d, z_1..z_d are final).

    Near-identity start, as :class:`IAFStep`: the MADE's output weights are scaled by 1e-2 and its
    biases zeroed, so m ~ 0 and s ~ 0, u ~ z (a prior made of these steps starts near N(0, I)).
    """

    def __init__(self, dim: int, hidden: int | Sequence[int] = 64, context_dim: int = 0):
        super().__init__()
        self.made = MADE(dim, hidden, context_dim)
        with torch.no_grad():
            self.made.out.weight.mul_(1e-2)
            self.made.out.bias.zero_()

    def forward(self, z: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z (..., B, D) -> (u (..., B, D), logabsdet (..., B) nats of du/dz)."""
        m, s = self.made(z, h)
        return (z - m) * torch.exp(-s), -s.sum(-1)

    def inverse(self, u: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z with forward(z)[0] = u, in D passes, and logabsdet (..., B) nats of dz/du: s_d depends on
        z_<d only, which the last pass already had final, so its s is the forward's at z."""
        z = torch.zeros_like(u)
        s = torch.zeros_like(u)
        for _ in range(u.shape[-1]):
            m, s = self.made(z, h)
            z = u * torch.exp(s) + m
        return z, s.sum(-1)


class MAF(_Stack):
    """Masked autoregressive flow: T MAFSteps with the order reversed between steps (and once more at
    the end where needed, as in :class:`IAF`, so that the flow starts near the identity, not a
    permutation). Papamakarios et al. 2017. ``forward`` is the density direction z -> u (one pass per
    step), ``inverse`` the sampling direction u -> z (D passes per step).

    Args:
        dim: D.
        steps: T, the number of MAF steps.
        context_dim: size of a context h (0: none; the flow prior has none).
        hidden: MADE hidden width(s).
    """

    def __init__(self, dim: int, steps: int, context_dim: int = 0, hidden: int | Sequence[int] | None = 64):
        super().__init__()
        if steps < 1:
            raise ValueError(f"a MAF needs steps >= 1, got {steps}")
        hidden = 64 if hidden is None else hidden
        layers: list[MAFStep | Reverse] = []
        for t in range(steps):
            if t > 0:
                layers.append(Reverse())
            layers.append(MAFStep(dim, hidden, context_dim))
        if steps % 2 == 0:
            layers.append(Reverse())
        self.transforms = nn.ModuleList(layers)

    @property
    def steps(self) -> int:
        return sum(isinstance(t, MAFStep) for t in self.transforms)


# name -> flow class: a live view of the posteriors' registry entries that push the Gaussian through a
# flow (vaelab.models.registry.POSTERIORS, where a flow is registered)
FLOWS: Mapping[str, type[nn.Module]] = Implementations(POSTERIORS, "flow")
