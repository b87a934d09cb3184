"""The encoder and decoder networks. They output distribution parameters and compute no loss.

An encoder is split in two so that a flow posterior can use its features as context:
``features(x, y1h)`` (B, F) and ``params(h)`` -> (loc, logvar), each (B, D); ``forward`` is both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.config import ModelConfig
from vaelab.models.registry import ARCHITECTURES

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): a dense layer gated by a second one (Dauphin et al. 2017),
    as GatedDense in jmtomczak/vae_vampprior. x (..., a) -> (..., b)."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.h = nn.Linear(a, b)
        self.g = nn.Linear(a, b)

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Dense layers of the given widths, each followed by the activation (or gated: GatedDense)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [GatedDense(a, b)] if activation == "gated" else [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """What every encoder shares: `features` (each subclass's network) feed one linear head that gives
    (loc, logvar). One layer for both: the same maths as two heads in one matmul."""

    head: nn.Linear
    features_dim: int  # the size of `features`, the context of a flow posterior
    logvar_range: tuple[float, float] | None = None  # ModelConfig.logvar_range

    def features(self, x: Tensor, y1h: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, logvar = self.head(h).chunk(2, dim=-1)  # (B, D) each
        if self.logvar_range is not None:
            logvar = nn.functional.hardtanh(logvar, *self.logvar_range)
        return loc, logvar

    def forward(self, x: Tensor, y1h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.params(self.features(x, y1h))


class MLPEncoder(GaussianEncoder):
    """x (B, C, H, W) [+ one-hot y] -> hidden layers -> (loc, logvar), each (B, D)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.body = _mlp([cfg.num_pixels + cfg.num_classes, *cfg.hidden], cfg.activation)
        self.features_dim = cfg.hidden[-1] if cfg.hidden else cfg.num_pixels + cfg.num_classes
        self.head = nn.Linear(self.features_dim, 2 * cfg.latent_dim)
        self.logvar_range = cfg.logvar_range

    def features(self, x: Tensor, y1h: Tensor | None = None) -> Tensor:
        """The last hidden layer, (B, features_dim): the context of a flow posterior."""
        h = x.flatten(1)  # (B, C*H*W)
        if y1h is not None:
            h = torch.cat([h, y1h], 1)
        return self.body(h)


class MLPDecoder(nn.Module):
    """z (..., B, D) [+ one-hot y] -> hidden layers (mirrored) -> params (..., B, P, C, H, W)."""

    def __init__(self, cfg: ModelConfig, num_params: int):
        super().__init__()
        hidden = list(reversed(cfg.hidden))
        self.body = _mlp([cfg.latent_dim + cfg.num_classes, *hidden], cfg.activation)
        self.out = nn.Linear(hidden[-1] if hidden else cfg.latent_dim + cfg.num_classes, num_params * cfg.num_pixels)
        self.shape = (num_params, *cfg.input_shape)

    def init_output_bias(self, mean: Tensor) -> None:
        """First output parameter's bias = logit of the mean training pixel `mean` (C, H, W), clipped to
        [0.001, 0.999] (Burda et al.'s code): p(x|z) starts at the data mean, not at grey."""
        with torch.no_grad():
            self.out.bias.view(self.shape)[0].copy_(torch.logit(mean.clamp(1e-3, 1 - 1e-3)))

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        out = self.out(self.body(z))  # (..., B, P*C*H*W)
        return out.view(*out.shape[:-1], *self.shape)  # (..., B, P, C, H, W)


class ResBlock(nn.Module):
    """x + conv1x1(act(conv3x3(act(x)))): the residual block of VQ-VAE's encoder and decoder
    (van den Oord et al. 2017), at a fixed number of channels."""

    def __init__(self, channels: int, act: type[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            act(), nn.Conv2d(channels, channels, 3, padding=1), act(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _res_blocks(cfg: ModelConfig) -> int:
    return cfg.res_blocks if ARCHITECTURES[cfg.arch].residual else 0


def down_stack(cfg: ModelConfig) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Stride-2 4x4 convolutions (cfg.channels), each halving H and W, then (arch resnet)
    cfg.res_blocks residual blocks at the coarsest scale. Returns the stack and its output (C', H', W')."""
    act = ACTIVATIONS[cfg.activation]
    c, h, w = cfg.input_shape
    layers: list[nn.Module] = []
    for ch in cfg.channels:
        layers += [nn.Conv2d(c, ch, 4, stride=2, padding=1), act()]
        c, h, w = ch, h // 2, w // 2
    blocks = _res_blocks(cfg)
    layers += [ResBlock(c, act) for _ in range(blocks)] + ([act()] if blocks else [])
    return nn.Sequential(*layers), (c, h, w)


def up_stack(cfg: ModelConfig, out_channels: int) -> nn.Sequential:
    """The mirror of down_stack, from (channels[-1], H', W') to (out_channels, H, W): residual
    blocks (arch resnet), then stride-2 transposed convolutions; the last one has no activation."""
    act = ACTIVATIONS[cfg.activation]
    chans = list(reversed(cfg.channels))
    blocks = _res_blocks(cfg)
    layers: list[nn.Module] = [ResBlock(chans[0], act) for _ in range(blocks)] + ([act()] if blocks else [])
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), act()]
    layers.append(nn.ConvTranspose2d(chans[-1], out_channels, 4, stride=2, padding=1))
    return nn.Sequential(*layers)


def _init_channel_bias(last: nn.Module, shape: tuple[int, ...], mean: Tensor) -> None:
    """A transposed convolution has one bias per channel: the logit of each channel's mean pixel
    (`mean` is (C, H, W) in [0, 1]), clipped to [0.001, 0.999]."""
    with torch.no_grad():
        assert isinstance(last, nn.ConvTranspose2d) and last.bias is not None
        bias = last.bias.view(shape[0], shape[1])  # (P, C)
        bias[0].copy_(torch.logit(mean.flatten(1).mean(1).clamp(1e-3, 1 - 1e-3)))


class ConvEncoder(GaussianEncoder):
    """down_stack (stride-2 4x4 convolutions, residual blocks for arch resnet), then a dense layer to
    (loc, logvar)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        self.convs, (c, h, w) = down_stack(cfg)
        width = cfg.hidden[0] if cfg.hidden else 256
        self.dense = nn.Sequential(nn.Linear(c * h * w + cfg.num_classes, width), act())
        self.features_dim = width
        self.head = nn.Linear(width, 2 * cfg.latent_dim)
        self.logvar_range = cfg.logvar_range

    def features(self, x: Tensor, y1h: Tensor | None = None) -> Tensor:
        """The dense layer after the convolutions, (B, features_dim): the context of a flow posterior."""
        h = self.convs(x).flatten(1)  # (B, C'*H'*W')
        if y1h is not None:
            h = torch.cat([h, y1h], 1)
        return self.dense(h)


class ConvDecoder(nn.Module):
    """Dense layer to a (C', H', W') feature map, then up_stack (transposed convolutions)."""

    def __init__(self, cfg: ModelConfig, num_params: int):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        c, h, w = cfg.input_shape
        factor = 2 ** len(cfg.channels)
        self.start = (cfg.channels[-1], h // factor, w // factor)
        width = cfg.hidden[0] if cfg.hidden else 256
        self.dense = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.num_classes, width),
            act(),
            nn.Linear(width, math.prod(self.start)),
            act(),
        )
        self.deconvs = up_stack(cfg, num_params * c)
        self.shape = (num_params, *cfg.input_shape)

    def init_output_bias(self, mean: Tensor) -> None:
        _init_channel_bias(self.deconvs[-1], self.shape, mean)

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start)  # (N, C', H', W')
        out = self.deconvs(h)  # (N, P*C, H, W)
        return out.view(*lead, *self.shape)  # (..., B, P, C, H, W)


class GridEncoder(nn.Module):
    """down_stack, then a 1x1 convolution to latent_dim channels: a (B, D, H', W') grid of vectors
    (VQ-VAE's z_e), with no dense layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.convs, (c, h, w) = down_stack(cfg)
        self.head = nn.Conv2d(c, cfg.latent_dim, 1)
        self.grid = (h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))


class GridDecoder(nn.Module):
    """A (..., B, D, H', W') grid -> 1x1 convolution to channels[-1] -> up_stack -> (..., B, P, C, H, W)."""

    def __init__(self, cfg: ModelConfig, num_params: int):
        super().__init__()
        self.head = nn.Conv2d(cfg.latent_dim, cfg.channels[-1], 1)
        self.deconvs = up_stack(cfg, num_params * cfg.input_shape[0])
        self.shape = (num_params, *cfg.input_shape)

    def init_output_bias(self, mean: Tensor) -> None:
        _init_channel_bias(self.deconvs[-1], self.shape, mean)

    def forward(self, grid: Tensor) -> Tensor:
        lead = grid.shape[:-3]
        out = self.deconvs(self.head(grid.reshape(-1, *grid.shape[-3:])))  # (N, P*C, H, W)
        return out.view(*lead, *self.shape)
