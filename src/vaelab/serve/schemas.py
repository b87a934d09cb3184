"""The explorer API's request and response bodies, and the validation that turns every bad request
into a 422 with a one-line message naming the field and the rule.

Request bodies depend on the model (D, the image size, the classes) and the limits, so
`request_models(explorer)` builds them for one explorer; responses are fixed.
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time.
import base64
import binascii
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from vaelab.errors import VaelabError
from vaelab.serve.explorer import Explorer


class ImageBatch(BaseModel):
    shape: list[int] = Field(description="(C, H, W) of every image")
    images: list[list[float]] = Field(description="B images, each C*H*W pixel means in [0, 1], row-major")


class DecodeResponse(ImageBatch):
    pass


class EncodeResponse(ImageBatch):
    loc: list[float] = Field(description="posterior mean of q(z|x), D numbers")
    logvar: list[float] | None = Field(
        description="posterior log-variance of q(z|x), D numbers; null for discrete latents (VQ codes, categories)"
    )


class TestItem(ImageBatch):
    index: int
    label: int | None
    z: list[float] = Field(description="posterior mean of the image, D numbers")


class InterpolateResponse(ImageBatch):
    z: list[list[float]] = Field(description="the latent path, steps x D, endpoints included")


class TraverseResponse(ImageBatch):
    dims: list[int] = Field(description="the latent dimension (0-based) of each row, by average KL, largest first")
    kl: list[float] = Field(description="each row's average KL(q(z_d|x) || N(0, 1)) over test images, nats")
    values: list[float] = Field(description="the values each row sweeps its dimension over")


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
    prior: str = Field(
        description="the prior's registered name (normal, mog, vamp, flow, ...): what /api/sample draws from"
    )
    prior_description: str = Field(
        description='that prior in words, as `vaelab sample` names it: "N(0, I)", "the learned mixture prior", '
        '"the VampPrior", ...'
    )
    samples_show: str = Field(
        description='what /api/sample returns: "pixel means of p(x|z)", or for bernoulli-ar "mean-field pass of p(x|z)"'
    )
    draw_title: str = Field(description='the drawing panel\'s heading: "Draw a digit" for MNIST, else "Draw an image"')
    posterior: str = Field(description="gaussian, planar or iaf")
    layers: list[int] = Field(description="latent sizes of a hierarchy, bottom first; [] for one layer")
    arch: str
    hidden: list[int]
    num_parameters: int
    test_images: int
    points: int
    has_labels: bool
    factor_names: list[str] = Field(description="ground-truth factors of the data ([] if none): /api/points has them")
    can_traverse: bool = Field(description="/api/traverse works: an unconditional model with D > 2")
    limits: Limits


class PointsResponse(BaseModel):
    plane: str = Field(
        description="latent (D <= 2: the latent itself), pca (its first two principal components) "
        "or dims (two latent dimensions, as asked)"
    )
    x: list[float]
    y: list[float]
    index: list[int] = Field(description="test-set index of each point")
    labels: list[int] | None
    factors: dict[str, list[float]] | None = Field(
        description="for data with ground-truth factors: each factor's value at each point, by name"
    )
    x_label: str
    y_label: str
    mean: list[float] = Field(description="plane = (z - mean) @ basis.T")
    basis: list[list[float]] = Field(description="2 x D")
    z_bound: float = Field(description="a symmetric range for latent sliders")


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one explorer, and the hint that each field's error message ends with."""

    decode: type[BaseModel]
    encode: type[BaseModel]
    encode_png: type[BaseModel]
    interpolate: type[BaseModel]
    sample: type[BaseModel]
    hints: dict[str, str]


def request_models(explorer: Explorer) -> RequestModels:
    """The request bodies of `explorer`'s API, with its sizes (D, C x H x W, classes, test-set size)
    and limits written into their fields, so that the OpenAPI schema states every rule."""
    cfg = explorer.cfg
    mc = explorer.model.cfg
    d, k = explorer.model.latent_size, mc.num_classes  # the flat z (D * H' * W' for a VQ grid)
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
    label_doc = (
        f"class label in 0..{k - 1} (required: the model is conditional)" if k else "omit: the model is not conditional"
    )
    hints = {
        "z": f"each z row holds D = {d} finite numbers in [-{bound:g}, {bound:g}]; 1 to {cfg.max_batch} rows",
        "pixels": f"a {pixels_doc}; divide 0-255 values by 255",
        "png": f"a base64 PNG (data: URL allowed) of exactly {w}x{h} pixels, at most {cfg.max_png_bytes} bytes",
        "label": label_doc,
        "a": f"a test-set index in 0..{n_test - 1}",
        "b": f"a test-set index in 0..{n_test - 1}",
        "index": f"a test-set index in 0..{n_test - 1}",
        "steps": f"an integer in 2..{cfg.max_steps}",
        "n": f"an integer in 1..{cfg.max_samples}",
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
        png: Annotated[
            str, Field(min_length=1, max_length=4 * (cfg.max_png_bytes // 3 + 1) + 32, description=hints["png"])
        ]

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

    return RequestModels(DecodeRequest, EncodeRequest, EncodePngRequest, InterpolateRequest, SampleRequest, hints)


def install_error_handlers(app: FastAPI, hints: dict[str, str]) -> None:
    """Answer every invalid request with a 422 whose `message` names the field, the rule and (from
    `hints`) what a valid value looks like: validation errors, bodies that are not JSON, and the
    library's own errors (e.g. non-finite output for an extreme z)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors, "message": _message(errors, hints)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not even JSON (e.g. not UTF-8): still a 422
            msg = f"body: the request body is not valid JSON ({exc.detail}); send UTF-8 JSON"
            return JSONResponse(
                {"detail": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}], "message": msg}, status_code=422
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(VaelabError)
    async def _vaelab(request: Request, exc: VaelabError) -> JSONResponse:
        msg = str(exc)
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": msg, "type": "value_error"}], "message": msg}, status_code=422
        )


def _images(a: np.ndarray) -> dict[str, Any]:
    """(B, C, H, W) -> {"shape": [C, H, W], "images": B flat lists of C*H*W values} (4 decimals)."""
    return {"shape": list(a.shape[1:]), "images": np.round(a.reshape(len(a), -1).astype(np.float64), 4).tolist()}


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
