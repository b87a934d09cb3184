"""`vaelab serve RUN`: a latent-space explorer in the browser (FastAPI + vanilla JS, no network).

The page (``vaelab/static``) shows the test set in latent space, decodes a draggable cursor live,
interpolates between two test images, samples the prior and encodes a digit drawn with the mouse.
Its JSON API is documented by the app's OpenAPI schema at ``/openapi.json`` (FastAPI's ``/docs``
page is switched off: it loads Swagger UI from a CDN, and this app loads nothing from the network):

    GET  /api/info               the model: latent dim D, image shape, classes, request limits
    GET  /api/points             the scatter: subsampled test-set latent means on the plane (cached)
    GET  /api/test/{index}       one test image, its label and latent mean
    POST /api/decode             {"z": [[...D numbers], ...], "label"?} -> pixel means
    POST /api/encode             {"pixels": H x W grey values in [0, 1], "label"?} -> loc, logvar, recon.
    POST /api/encode/png         {"png": base64 PNG of H x W pixels, "label"?} -> the same
    POST /api/interpolate        {"a": i, "b": j, "steps", "spherical"} -> latent path and its images
    POST /api/sample             {"n", "label"?, "seed"?} -> decoded draws z ~ p(z), the model's own prior

Every bad request (wrong length, non-finite or huge values, oversized batches or images, bad
labels) is a 422 with a one-line ``message`` and pydantic's ``detail`` list; never a 500.

The model is loaded once, read-only, and every call to it runs under one lock in inference mode,
so concurrent requests are safe. This module computes no maths of its own: it calls the model's
verbs (encode, decode, sample), :func:`vaelab.models.interpolate_latents` and
:func:`vaelab.plots.latent_axes`.
"""

# No `from __future__ import annotations`: FastAPI reads the request models defined inside
# create_app from the annotations, which must therefore be real objects, not strings.
import base64
import binascii
import io
import ipaddress
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Sequence

import numpy as np
import torch

from vaelab.data import ImageData, iter_batches, to_float
from vaelab.errors import ConfigError, VaelabError
from vaelab.models import VAE, interpolate_latents
from vaelab.plots import latent_axes

try:
    import uvicorn
    from fastapi import FastAPI, Path as PathParam, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
except ImportError as e:  # the optional extra is missing
    raise ImportError(f"vaelab serve needs the `serve` extra ({e.name} is missing): pip install 'vaelab[serve]'") from e

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ("localhost",)
# Every script, style and request of the page stays on this server (no CDN, no third party).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


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

    def __post_init__(self) -> None:
        for name in ("max_points", "max_batch", "max_steps", "max_samples", "max_png_bytes", "max_body_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.max_steps < 2:
            raise ConfigError(f"max_steps must be >= 2 (the two endpoints), got {self.max_steps}")
        if not (isinstance(self.max_abs_latent, (int, float)) and 0 < self.max_abs_latent < float("inf")):
            raise ConfigError(f"max_abs_latent must be a positive finite number, got {self.max_abs_latent!r}")


class Explorer:
    """A trained model and its test set, as the web page needs them. Arrays in, arrays out.

    Every model call runs under one lock in inference mode; the scatter is computed once.
    """

    def __init__(self, model: VAE, test: ImageData, class_names: Sequence[str] = (), cfg: ServeConfig = ServeConfig(),
                 name: str = "", dataset: str = ""):
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
        return x, (yb.to(self.model.device) if self.conditional and yb is not None else None)

    def _compute_points(self) -> dict[str, Any]:
        n = len(self.test)
        k = min(n, self.cfg.max_points)
        index = np.sort(np.random.default_rng(self.cfg.seed).choice(n, size=k, replace=False))
        sub = ImageData(*self.test.batch(torch.from_numpy(index)))
        locs = []
        with self.lock, torch.inference_mode():
            for xb, yb in iter_batches(sub, 1000):
                y = yb.to(self.model.device) if self.conditional and yb is not None else None
                locs.append(self.model.encode_mean(to_float(xb.to(self.model.device)), y).cpu().numpy())
        z = np.concatenate(locs).astype(np.float64)  # (k, D)
        pts, x_label, y_label = latent_axes(z)
        mean, basis = plane_map(z, pts)
        return {
            "x": pts[:, 0], "y": pts[:, 1], "index": index,
            "labels": None if sub.labels is None else sub.labels.numpy(),
            "x_label": _plain(x_label), "y_label": _plain(y_label), "mean": mean, "basis": basis,
            "z_bound": float(max(4.0, np.ceil(np.abs(z).max()))),
        }

    def points(self) -> dict[str, Any]:
        """The cached scatter: plane coordinates (x, y), test indices, labels, axis labels, and the
        linear map (mean (D,), basis (2, D)) from latents to the plane."""
        return self._points

    def decode(self, z: np.ndarray, label: int | None = None) -> np.ndarray:
        """Pixel means (B, C, H, W) in [0, 1] for latents z (B, D)."""
        with self.lock, torch.inference_mode():
            zt = torch.as_tensor(z, dtype=torch.float32, device=self.model.device)
            out = self.model.decode(zt, self._label(label, len(zt))).cpu().numpy()
        return _finite(out, "the decoder produced non-finite pixels for this z; use smaller latent values")

    def encode(self, x: np.ndarray, label: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior (loc, logvar), each (B, D), and the reconstruction decode(loc) (B, C, H, W), for x (B, C, H, W)."""
        with self.lock, torch.inference_mode():
            xt = torch.as_tensor(x, dtype=torch.float32, device=self.model.device)
            y = self._label(label, len(xt))
            logvar = self.model.encode(xt, y)[1]  # of q(z|x)'s Gaussian (a flow's base)
            loc = self.model.encode_mean(xt, y)  # the point the scatter and the decoder use
            recon = self.model.decode(loc, y)
        return loc.cpu().numpy(), logvar.cpu().numpy(), _finite(recon.cpu().numpy(), "the reconstruction is not finite")

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

    def sample(self, n: int, label: int | None = None, seed: int = 0) -> np.ndarray:
        """n decoded draws z ~ p(z) of the model's own prior: (n, C, H, W) pixel means, reproducible by seed."""
        with self.lock, torch.inference_mode():
            g = torch.Generator(self.model.device).manual_seed(seed)
            out = self.model.sample(n, label, generator=g).cpu().numpy()
        return _finite(out, "the samples are not finite")

    def info(self) -> dict[str, Any]:
        mc = self.model.cfg
        return {
            "name": self.name, "dataset": self.dataset, "latent_dim": mc.latent_dim,
            "input_shape": list(mc.input_shape), "num_classes": mc.num_classes, "prior": mc.prior,
            "posterior": mc.posterior, "layers": [layer.latent_dim for layer in mc.layers],
            "class_names": list(self.class_names), "likelihood": mc.likelihood, "arch": mc.arch,
            "hidden": list(mc.hidden), "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "test_images": len(self.test), "points": len(self._points["index"]),
            "has_labels": self.test.labels is not None,
            "limits": {"max_batch": self.cfg.max_batch, "max_abs_latent": self.cfg.max_abs_latent,
                       "max_steps": self.cfg.max_steps, "max_samples": self.cfg.max_samples,
                       "max_png_bytes": self.cfg.max_png_bytes},
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


def _images(a: np.ndarray) -> dict[str, Any]:
    """(B, C, H, W) -> {"shape": [C, H, W], "images": B flat lists of C*H*W values} (4 decimals)."""
    return {"shape": list(a.shape[1:]), "images": np.round(a.reshape(len(a), -1).astype(np.float64), 4).tolist()}


# -- the web app ---------------------------------------------------------------------------------

class ImageBatch(BaseModel):
    shape: list[int] = Field(description="(C, H, W) of every image")
    images: list[list[float]] = Field(description="B images, each C*H*W pixel means in [0, 1], row-major")


class DecodeResponse(ImageBatch):
    pass


class EncodeResponse(ImageBatch):
    loc: list[float] = Field(description="posterior mean of q(z|x), D numbers")
    logvar: list[float] = Field(description="posterior log-variance of q(z|x), D numbers")


class TestItem(ImageBatch):
    index: int
    label: int | None
    z: list[float] = Field(description="posterior mean of the image, D numbers")


class InterpolateResponse(ImageBatch):
    z: list[list[float]] = Field(description="the latent path, steps x D, endpoints included")


class SampleResponse(ImageBatch):
    seed: int = Field(description="the seed that reproduces these samples")


class Limits(BaseModel):
    max_batch: int
    max_abs_latent: float
    max_steps: int
    max_samples: int
    max_png_bytes: int


class InfoResponse(BaseModel):
    name: str
    dataset: str
    latent_dim: int
    input_shape: list[int]
    num_classes: int = Field(description="0 for an unconditional model")
    class_names: list[str]
    likelihood: str
    prior: str = Field(description="normal, mog or vamp: what /api/sample draws from")
    posterior: str = Field(description="gaussian, planar or iaf")
    layers: list[int] = Field(description="latent sizes of a hierarchy, bottom first; [] for one layer")
    arch: str
    hidden: list[int]
    num_parameters: int
    test_images: int
    points: int
    has_labels: bool
    limits: Limits


class PointsResponse(BaseModel):
    x: list[float]
    y: list[float]
    index: list[int] = Field(description="test-set index of each point")
    labels: list[int] | None
    x_label: str
    y_label: str
    mean: list[float] = Field(description="plane = (z - mean) @ basis.T")
    basis: list[list[float]] = Field(description="2 x D")
    z_bound: float = Field(description="a symmetric range for latent sliders")


def _message(errors: Sequence[dict[str, Any]], hints: dict[str, str]) -> str:
    parts = []
    for e in errors[:3]:
        loc = [str(p) for p in e.get("loc", ())]
        field = next((p for p in loc if p in hints), None)
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}" + (f" ({hints[field]})" if field else ""))
    more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _whole(v: Any) -> Any:
    """JSON Schema counts 6.0 as an integer; pydantic's strict mode would not. Strings stay invalid."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _int(lo: int, hi: int) -> Any:
    """An integer in lo..hi (the constraint sits inside the validator, so the schema shows it)."""
    return Annotated[Annotated[int, Field(ge=lo, le=hi)], BeforeValidator(_whole)]


def _unprocessable(loc: Sequence[str], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "value_error"}])


class _BodyLimit:
    """ASGI middleware: a 422 for any body whose Content-Length exceeds the limit, before it is read.
    (413 would be the HTTP word for it; the API keeps one status for every bad request.)"""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.limit:
                msg = f"request body of {length.decode(errors='replace')} bytes; the limit is {self.limit}"
                await JSONResponse({"detail": [{"loc": ["body"], "msg": msg, "type": "too_large"}], "message": msg},
                                   status_code=422)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(explorer: Explorer) -> FastAPI:
    """The FastAPI app of the explorer: the page at /, its files at /static, the JSON API at /api."""
    cfg = explorer.cfg
    mc = explorer.model.cfg
    d, k = mc.latent_dim, mc.num_classes
    c, h, w = mc.input_shape
    n_test = len(explorer.test)
    bound = cfg.max_abs_latent
    strict = ConfigDict(extra="forbid", strict=True)

    Latent = Annotated[float, Field(ge=-bound, le=bound, allow_inf_nan=False)]
    ZRow = Annotated[list[Latent], Field(min_length=d, max_length=d)]
    Pixel = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    Row = Annotated[list[Pixel], Field(min_length=w, max_length=w)]
    Plane = Annotated[list[Row], Field(min_length=h, max_length=h)]
    Pixels: Any = Plane if c == 1 else Annotated[list[Plane], Field(min_length=c, max_length=c)]
    pixels_doc = f"{h} rows of {w} grey values in [0, 1]" if c == 1 else f"{c} x {h} x {w} values in [0, 1]"
    label_doc = f"class label in 0..{k - 1} (required: the model is conditional)" if k else \
        "omit: the model is not conditional"
    hints = {
        "z": f"each z row holds D = {d} finite numbers in [-{bound:g}, {bound:g}]; 1 to {cfg.max_batch} rows",
        "pixels": f"a {pixels_doc}; divide 0-255 values by 255",
        "png": f"a base64 PNG (data: URL allowed) of exactly {w}x{h} pixels, at most {cfg.max_png_bytes} bytes",
        "label": label_doc,
        "a": f"a test-set index in 0..{n_test - 1}", "b": f"a test-set index in 0..{n_test - 1}",
        "index": f"a test-set index in 0..{n_test - 1}",
        "steps": f"an integer in 2..{cfg.max_steps}", "n": f"an integer in 1..{cfg.max_samples}",
        "seed": "an integer in 0..2147483647, or omit it for a fresh one",
    }

    if k:
        class Labelled(BaseModel):
            model_config = strict
            label: _int(0, k - 1) = Field(description=label_doc)
    else:
        class Labelled(BaseModel):  # type: ignore[no-redef]
            model_config = strict
            label: None = Field(None, description=label_doc)

            @field_validator("label", mode="before")
            @classmethod
            def _no_label(cls, v: Any) -> None:
                if v is not None:
                    raise ValueError(f"this model is not conditional (num_classes = 0): omit label, got {v!r}")
                return None

    class DecodeRequest(Labelled):
        z: Annotated[list[ZRow], Field(min_length=1, max_length=cfg.max_batch, description=hints["z"])]

    class EncodeRequest(Labelled):
        pixels: Pixels = Field(description=pixels_doc)

    class EncodePngRequest(Labelled):
        png: Annotated[str, Field(min_length=1, max_length=4 * (cfg.max_png_bytes // 3 + 1) + 32,
                                  description=hints["png"])]

    TestIndex = _int(0, n_test - 1)

    class InterpolateRequest(BaseModel):
        model_config = strict
        a: TestIndex = Field(description=hints["a"])
        b: TestIndex = Field(description=hints["b"])
        steps: _int(2, cfg.max_steps) = 10
        spherical: bool = Field(False, description="slerp along the great circle instead of a straight line")

    class SampleRequest(Labelled):
        n: _int(1, cfg.max_samples) = 16
        seed: _int(0, 2**31 - 1) | None = None

    app = FastAPI(
        docs_url=None, redoc_url=None,  # both load scripts from a CDN; the schema is at /openapi.json
        title="vaelab latent explorer",
        version=_version(),
        description=f"Explore the latent space of the VAE in {explorer.name or 'this run'} "
                    f"(D = {d}, images {c}x{h}x{w}{f', conditional on {k} classes' if k else ''}). "
                    "Pixels are means of p(x|z) in [0, 1]. Every bad request is a 422 with a `message`.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors, "message": _message(errors, hints)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not even JSON (e.g. not UTF-8): still a 422
            msg = f"body: the request body is not valid JSON ({exc.detail}); send UTF-8 JSON"
            return JSONResponse({"detail": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}], "message": msg},
                                status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(VaelabError)
    async def _vaelab(request: Request, exc: VaelabError) -> JSONResponse:
        msg = str(exc)
        return JSONResponse({"detail": [{"loc": ["body"], "msg": msg, "type": "value_error"}], "message": msg},
                            status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_middleware(_BodyLimit, limit=cfg.max_body_bytes)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info", response_model=InfoResponse, summary="The model and the API's limits")
    def info() -> dict[str, Any]:
        return explorer.info()

    @app.get("/api/points", response_model=PointsResponse,
             summary="Test-set latent means on the plane (subsampled, computed once)")
    def points() -> dict[str, Any]:
        p = explorer.points()
        return {**p, "x": p["x"].tolist(), "y": p["y"].tolist(), "index": p["index"].tolist(),
                "labels": None if p["labels"] is None else p["labels"].tolist(),
                "mean": p["mean"].tolist(), "basis": p["basis"].tolist()}

    @app.get("/api/test/{index}", response_model=TestItem, summary="One test image, its label and latent mean")
    def test_item(index: Annotated[int, PathParam(ge=0, le=n_test - 1, description=hints["index"])]) -> dict[str, Any]:
        x, label, z = explorer.test_item(index)
        return {**_images(x[None]), "index": index, "label": label, "z": z.tolist()}

    @app.post("/api/decode", response_model=DecodeResponse, summary="Pixel means of p(x|z) for latents z")
    def decode(req: DecodeRequest) -> dict[str, Any]:
        return _images(explorer.decode(np.asarray(req.z, dtype=np.float32), req.label))

    def _encode(x: np.ndarray, label: int | None) -> dict[str, Any]:
        loc, logvar, recon = explorer.encode(x, label)
        return {**_images(recon), "loc": loc[0].tolist(), "logvar": logvar[0].tolist()}

    @app.post("/api/encode", response_model=EncodeResponse,
              summary="Encode one image given as numbers: q(z|x) and the reconstruction decode(loc)")
    def encode(req: EncodeRequest) -> dict[str, Any]:
        return _encode(np.asarray(req.pixels, dtype=np.float32).reshape(1, c, h, w), req.label)

    @app.post("/api/encode/png", response_model=EncodeResponse,
              summary="Encode one image given as a base64 PNG: q(z|x) and the reconstruction")
    def encode_png(req: EncodePngRequest) -> dict[str, Any]:
        return _encode(_read_png(req.png, c, h, w, cfg.max_png_bytes)[None], req.label)

    @app.post("/api/interpolate", response_model=InterpolateResponse,
              summary="Decode the path between the latent means of two test images")
    def interpolate(req: InterpolateRequest) -> dict[str, Any]:
        z, images = explorer.interpolate(req.a, req.b, req.steps, req.spherical)
        return {**_images(images), "z": z.tolist()}

    @app.post("/api/sample", response_model=SampleResponse, summary="Decoded draws z ~ N(0, I) from the prior")
    def sample(req: SampleRequest) -> dict[str, Any]:
        seed = secrets.randbelow(2**31) if req.seed is None else req.seed
        return {**_images(explorer.sample(req.n, req.label, seed)), "seed": seed}

    return app


def _read_png(data: str, c: int, h: int, w: int, max_bytes: int) -> np.ndarray:
    """A base64 PNG (or data: URL) of exactly w x h pixels -> (C, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    loc = ("body", "png")
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise _unprocessable(loc, "a data: URL must be base64-encoded (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _unprocessable(loc, "not valid base64") from None
    if len(raw) > max_bytes:
        raise _unprocessable(loc, f"the PNG has {len(raw)} bytes; the limit is {max_bytes}")
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _unprocessable(loc, "not a PNG file (it lacks the PNG signature)")
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            if im.size != (w, h):  # checked from the header, before any pixel is decompressed
                raise _unprocessable(loc, f"the PNG is {im.size[0]}x{im.size[1]} pixels; resize it to {w}x{h}")
            arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _unprocessable(loc, f"the PNG cannot be read ({e})") from None
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)  # (C, H, W)


def _version() -> str:
    from vaelab import __version__

    return __version__


# -- loading and running -------------------------------------------------------------------------

def app_from_run(run_dir: str | Path, cfg: ServeConfig = ServeConfig(), device: str = "cpu",
                 weights: str = "model.safetensors", data_dir: str | None = None) -> FastAPI:
    """Load a run folder's model (read-only) and its dataset's test split, and build the app."""
    from dataclasses import replace as dc_replace

    from vaelab.checkpoint import load, read_config
    from vaelab.data import load_splits
    from vaelab.train import resolve_device

    run_dir = Path(run_dir)
    rcfg = read_config(run_dir)
    model = load(run_dir, weights=weights, device=resolve_device(device))
    dcfg = dc_replace(rcfg.data, limit=None, **({"data_dir": data_dir} if data_dir else {}))
    splits = load_splits(dcfg)
    explorer = Explorer(model, splits.test, splits.class_names, cfg, name=run_dir.name, dataset=splits.name)
    return create_app(explorer)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port). Raises ConfigError if taken."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: cannot resolve it ({e.strerror}); try --host 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on such sockets, and without
    # it every keep-alive response waits ~40 ms for a delayed ACK (Nagle's algorithm).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port, "
                          f"or --port 0 for any free one") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve `app` on a socket from :func:`bind` until Ctrl+C."""
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off"))
    server.run(sockets=[sock])
