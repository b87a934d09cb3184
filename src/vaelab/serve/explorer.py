"""The explorer's model side: a trained model and its test set, arrays in and arrays out.

No HTTP here (see app.py); every model call runs under one lock in inference mode.
"""

# No `from __future__ import annotations`: FastAPI reads these classes' annotations.
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaelab.data import ImageData, to_float
from vaelab.errors import ConfigError
from vaelab.evaluation.estimates import encode_means, labels_for
from vaelab.models import BaseVAE, interpolate_latents
from vaelab.plots import latent_axes
from vaelab.serve.guards import _host_name

# Datasets whose images are handwritten digits: for them the drawing panel asks for a digit, for any
# other data (Fashion-MNIST, shapes2d, CIFAR-10, a folder of images) for an image.
DIGIT_DATASETS = ("mnist",)


def draw_title(dataset: str) -> str:
    """The drawing panel's heading for images of `dataset` (a DataSplits.name)."""
    return "Draw a digit" if dataset in DIGIT_DATASETS else "Draw an image"


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the explorer's API. Defaults keep every request under a few milliseconds on a CPU."""

    max_points: int = 5000  # test images shown in the scatter (a seeded subsample)
    max_batch: int = 256  # latents per /api/decode request
    max_abs_latent: float = 1000.0  # |z_i| bound: the prior N(0, I) puts no mass anywhere near it
    max_steps: int = 32  # interpolation steps
    max_samples: int = 64  # draws per /api/sample request
    max_png_bytes: int = 256 * 1024  # encoded PNG size for /api/encode/png
    max_body_bytes: int = 4 * 1024 * 1024  # any request body; larger bodies get a 422 before being read
    seed: int = 0  # seed of the scatter's subsample
    # Host names (or addresses) a request may be addressed to; any other Host header gets a 421, so
    # that a page on another site cannot reach this server by rebinding its DNS name to 127.0.0.1.
    # `vaelab serve` adds the address it binds and the names given with --allow-host.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

    def __post_init__(self) -> None:
        for name in ("max_points", "max_batch", "max_steps", "max_samples", "max_png_bytes", "max_body_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.max_steps < 2:
            raise ConfigError(f"max_steps must be >= 2 (the two endpoints), got {self.max_steps}")
        if not (isinstance(self.max_abs_latent, (int, float)) and 0 < self.max_abs_latent < float("inf")):
            raise ConfigError(f"max_abs_latent must be a positive finite number, got {self.max_abs_latent!r}")
        bad = [h for h in self.allowed_hosts if not isinstance(h, str) or not _host_name(h) or "/" in h]
        if not self.allowed_hosts or bad:
            raise ConfigError(
                f"allowed_hosts must be host names or addresses (no scheme, no port), got "
                f"{bad or list(self.allowed_hosts)!r}; e.g. --allow-host mybox.local"
            )


class Explorer:
    """A trained model and its test set, as the web page needs them. Arrays in, arrays out.

    Every model call runs under one lock in inference mode; the scatter is computed once.
    """

    def __init__(
        self,
        model: BaseVAE,
        test: ImageData,
        class_names: Sequence[str] = (),
        cfg: ServeConfig = ServeConfig(),
        name: str = "",
        dataset: str = "",
        factor_names: Sequence[str] = (),
    ):
        if len(test) == 0:
            raise ConfigError("the test set is empty: the explorer needs test images for its scatter")
        if tuple(test.shape) != tuple(model.cfg.input_shape):
            raise ConfigError(f"test images are {tuple(test.shape)} but the model takes {tuple(model.cfg.input_shape)}")
        if model.cfg.num_classes and test.labels is None:
            raise ConfigError("the model is conditional but the test set has no labels")
        self.model = model.eval().requires_grad_(False)
        self.test = test
        self.class_names = tuple(class_names)
        self.cfg = cfg
        self.name = name
        self.dataset = dataset
        # data with ground-truth factors (test.factors (N, F)): the scatter can be coloured by one
        self.factor_names = tuple(factor_names) if test.factors is not None else ()
        self._traversal_order: tuple[np.ndarray, np.ndarray] | None = None
        self.lock = threading.Lock()
        self._points = self._compute_points()

    @property
    def conditional(self) -> bool:
        return self.model.cfg.num_classes > 0

    def _label(self, label: int | None, n: int) -> torch.Tensor | None:
        return None if label is None else torch.full((n,), int(label), dtype=torch.long, device=self.model.device)

    def _test_batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        xb, yb = self.test.batch(torch.from_numpy(np.asarray(index, dtype=np.int64)))
        x = to_float(xb.to(self.model.device))  # (B, C, H, W) in [0, 1]
        return x, labels_for(self.model, yb)

    def _compute_points(self) -> dict[str, Any]:
        n = len(self.test)
        k = min(n, self.cfg.max_points)
        index = np.sort(np.random.default_rng(self.cfg.seed).choice(n, size=k, replace=False))
        sub = ImageData(*self.test.batch(torch.from_numpy(index)))
        with self.lock, torch.inference_mode():
            z = encode_means(self.model, sub, batch_size=1000).astype(np.float64)  # (k, D)
        self._z = z
        pts, x_label, y_label = latent_axes(z)
        mean, basis = plane_map(z, pts)
        return {
            "plane": "latent" if z.shape[1] <= 2 else "pca",
            "x": pts[:, 0],
            "y": pts[:, 1],
            "index": index,
            "labels": None if sub.labels is None else sub.labels.numpy(),
            "factors": None
            if not self.factor_names or self.test.factors is None
            else {name: self.test.factors[index, j] for j, name in enumerate(self.factor_names)},
            "x_label": _plain(x_label),
            "y_label": _plain(y_label),
            "mean": mean,
            "basis": basis,
            "z_bound": float(max(4.0, np.ceil(np.abs(z).max()))),
        }

    def points(self, dims: tuple[int, int] | None = None) -> dict[str, Any]:
        """The scatter: plane coordinates (x, y), test indices, labels, axis labels, and the linear
        map (mean (D,), basis (2, D)) from latents to the plane.

        dims=None: the library's plane (the latent itself for D <= 2, else its first two principal
        components), computed once. dims=(i, j): latent dimensions i and j (0-based) as the axes.
        """
        if dims is None:
            return self._points
        i, j = dims
        d = self._z.shape[1]
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise ConfigError(f"dims {list(dims)}: give two different latent dimensions in 0..{d - 1}")
        basis = np.zeros((2, d))
        basis[0, i] = basis[1, j] = 1.0
        return {
            **self._points,
            "plane": "dims",
            "x": self._z[:, i],
            "y": self._z[:, j],
            "x_label": f"z{i + 1}",
            "y_label": f"z{j + 1}",
            "mean": np.zeros(d),
            "basis": basis,
        }

    def decode(self, z: np.ndarray, label: int | None = None) -> np.ndarray:
        """Pixel means (B, C, H, W) in [0, 1] for latents z (B, D)."""
        with self.lock, torch.inference_mode():
            zt = torch.as_tensor(z, dtype=torch.float32, device=self.model.device)
            out = self.model.decode(zt, self._label(label, len(zt))).cpu().numpy()
        return _finite(out, "the decoder produced non-finite pixels for this z; use smaller latent values")

    def encode(self, x: np.ndarray, label: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Posterior (loc, logvar), each (B, D), and the reconstruction decode(loc) (B, C, H, W), for x
        (B, C, H, W). logvar is None for discrete latents, which have no Gaussian."""
        with self.lock, torch.inference_mode():
            xt = torch.as_tensor(x, dtype=torch.float32, device=self.model.device)
            y = self._label(label, len(xt))
            logvar = self.model.encode(xt, y)[1] if self.model.continuous_latents else None  # a flow's base
            loc = self.model.encode_mean(xt, y)  # the point the scatter and the decoder use
            recon = self.model.decode(loc, y)
        lv = None if logvar is None else logvar.cpu().numpy()
        return loc.cpu().numpy(), lv, _finite(recon.cpu().numpy(), "the reconstruction is not finite")

    def test_item(self, i: int) -> tuple[np.ndarray, int | None, np.ndarray]:
        """Test image i as (C, H, W) pixels in [0, 1], its label (or None) and its latent mean (D,)."""
        x, y = self._test_batch(np.array([i]))
        with self.lock, torch.inference_mode():
            loc = self.model.encode_mean(x, y)
        label = None if self.test.labels is None else int(self.test.labels[i])
        return x[0].cpu().numpy(), label, loc[0].cpu().numpy()

    def interpolate(self, a: int, b: int, steps: int, spherical: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The path (steps, D) between the latent means of test images a and b, and its images
        (steps, C, H, W). A conditional model decodes the whole path with the label of a."""
        x, y = self._test_batch(np.array([a, b]))
        with self.lock, torch.inference_mode():
            loc = self.model.encode_mean(x, y)  # (2, D)
            z = interpolate_latents(loc[0], loc[1], steps, spherical)  # (steps, D)
            images = self.model.decode(z, None if y is None else y[:1].expand(steps))
        return z.cpu().numpy(), _finite(images.cpu().numpy(), "the interpolation is not finite")

    @property
    def can_traverse(self) -> bool:
        """Traversals are drawn for unconditional models with more than 2 latent dimensions."""
        return self.model.continuous_latents and self.model.latent_size > 2 and not self.conditional

    def traverse(self, i: int, steps: int) -> dict[str, Any]:
        """Each latent dimension of test image i's code swept from -3 to 3 (vaelab.analysis.factors.traversals),
        rows sorted by the dimension's average KL over the first 1,000 test images (computed once):
        dims (D,), kl (D,) nats, values (steps,), images (D * steps, C, H, W), row-major."""
        from vaelab.analysis.factors import traversal_order, traversals

        if not self.can_traverse:
            raise ConfigError(
                "traversals are drawn for unconditional models with more than 2 latent dimensions; "
                f"this one has {self.model.cfg.latent_dim}{' and is conditional' if self.conditional else ''}"
            )
        x, _ = self._test_batch(np.array([i]))
        with self.lock, torch.inference_mode():
            if self._traversal_order is None:
                self._traversal_order = traversal_order(self.model, self.test)
            order, kl = self._traversal_order
            imgs, values, dims = traversals(self.model, x[0], steps, order=order)
        images = imgs.cpu().numpy()
        return {
            "dims": dims,
            "kl": kl[dims],
            "values": values.numpy(),
            "images": _finite(images.reshape(-1, *images.shape[2:]), "the traversal is not finite"),
        }

    def sample(self, n: int, label: int | None = None, seed: int = 0) -> np.ndarray:
        """n decoded draws z ~ p(z) of the model's own prior: (n, C, H, W) pixel means, reproducible by seed."""
        with self.lock, torch.inference_mode():
            g = torch.Generator(self.model.device).manual_seed(seed)
            out = self.model.sample(n, label, generator=g).cpu().numpy()
        return _finite(out, "the samples are not finite")

    def info(self) -> dict[str, Any]:
        mc = self.model.cfg
        return {
            "name": self.name,
            "dataset": self.dataset,
            "latent_dim": self.model.latent_size,  # the flat z the API takes
            "input_shape": list(mc.input_shape),
            "num_classes": mc.num_classes,
            "prior": mc.prior,
            # p(z) in words, as `vaelab sample` titles its picture ("N(0, I)", "the VampPrior", ...)
            "prior_description": self.model.prior_description,
            # what /api/sample's images are: the pixel means ("mean-field pass" for bernoulli-ar)
            "samples_show": self.model.likelihood.describe("mean"),
            "draw_title": draw_title(self.dataset),
            "posterior": mc.posterior,
            "layers": [layer.latent_dim for layer in mc.layers],
            "class_names": list(self.class_names),
            "likelihood": mc.likelihood,
            "arch": mc.arch,
            "hidden": list(mc.hidden),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "test_images": len(self.test),
            "points": len(self._points["index"]),
            "has_labels": self.test.labels is not None,
            "factor_names": list(self.factor_names),
            "can_traverse": self.can_traverse,
            "limits": {
                "max_batch": self.cfg.max_batch,
                "max_abs_latent": self.cfg.max_abs_latent,
                "max_steps": self.cfg.max_steps,
                "max_samples": self.cfg.max_samples,
                "max_png_bytes": self.cfg.max_png_bytes,
            },
        }


def plane_map(z: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine map pts = (z - mean) @ basis.T that :func:`vaelab.plots.latent_axes` applied to z
    (N, D) -> (N, 2): mean (D,) and basis (2, D). The page uses it to move the cursor in the plane.

    For D <= 2 the plane is the latent itself. For D > 2 the map is the library's own PCA projection,
    read back by least squares (exact: pts is a linear function of the centred z), so that the
    page and :func:`vaelab.plots.pca2` can never disagree on signs or order.
    """
    d = z.shape[1]
    if d <= 2:
        return np.zeros(d), np.eye(2, d)
    mean = z.mean(0)
    basis = np.linalg.lstsq(z - mean, pts, rcond=None)[0].T  # (2, D)
    return mean, basis


def _plain(label: str) -> str:
    """Matplotlib's "$z_1$" as "z1" for the page."""
    return label.replace("$", "").replace("_", "")


def _finite(a: np.ndarray, message: str) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ConfigError(message)
    return a
