"""The explorer's web app: the page at /, its files at /static, the JSON API at /api (routes only:
the bodies and their validation are in schemas.py, the guards in guards.py, the model side in
explorer.py), and serving it on a socket."""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations, which
# must therefore be real objects, not strings.
import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from vaelab.errors import ConfigError
from vaelab.serve.explorer import Explorer, ServeConfig
from vaelab.serve.guards import _BodyLimit, _HostCheck, security_headers
from vaelab.serve.schemas import (
    DecodeResponse,
    EncodeResponse,
    InfoResponse,
    InterpolateResponse,
    PointsResponse,
    SampleResponse,
    TestItem,
    TraverseResponse,
    _images,
    _read_png,
    _unprocessable,
    install_error_handlers,
    request_models,
)

STATIC = Path(__file__).resolve().parent.parent / "static"
LOOPBACK_NAMES = ("localhost",)


def create_app(explorer: Explorer) -> FastAPI:
    """The FastAPI app of the explorer: the page at /, its files at /static, the JSON API at /api."""
    cfg = explorer.cfg
    mc = explorer.model.cfg
    d, k = explorer.model.latent_size, mc.num_classes  # the flat z (D * H' * W' for a VQ grid)
    c, h, w = mc.input_shape
    n_test = len(explorer.test)
    models = request_models(explorer)
    hints = models.hints
    DecodeRequest, EncodeRequest, EncodePngRequest = models.decode, models.encode, models.encode_png
    InterpolateRequest, SampleRequest = models.interpolate, models.sample

    app = FastAPI(
        docs_url=None,
        redoc_url=None,  # both load scripts from a CDN; the schema is at /openapi.json
        title="vaelab latent explorer",
        version=_version(),
        description=f"Explore the latent space of the VAE in {explorer.name or 'this run'} "
        f"(D = {d}, images {c}x{h}x{w}{f', conditional on {k} classes' if k else ''}). "
        "Pixels are means of p(x|z) in [0, 1]. Every bad request is a 422 with a `message`.",
    )

    install_error_handlers(app, hints)  # every bad request: a 422 with a one-line message

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        return security_headers(await call_next(request))

    app.add_middleware(_BodyLimit, limit=cfg.max_body_bytes)
    app.add_middleware(_HostCheck, allowed=cfg.allowed_hosts)  # added last: runs first

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info", response_model=InfoResponse, summary="The model and the API's limits")
    def info() -> dict[str, Any]:
        return explorer.info()

    @app.get(
        "/api/points",
        response_model=PointsResponse,
        summary="Test-set latent means on the plane (subsampled, computed once): the library's plane, "
        "or two latent dimensions x_dim and y_dim",
    )
    def points(
        x_dim: Annotated[int | None, Query(ge=0, le=d - 1, description=f"latent dimension on x, 0..{d - 1}")] = None,
        y_dim: Annotated[int | None, Query(ge=0, le=d - 1, description=f"latent dimension on y, 0..{d - 1}")] = None,
    ) -> dict[str, Any]:
        if (x_dim is None) != (y_dim is None) or (x_dim is not None and x_dim == y_dim):
            raise _unprocessable(
                ("query", "x_dim"), f"give both x_dim and y_dim, two different dimensions in 0..{d - 1}, or neither"
            )
        p = explorer.points(None if x_dim is None or y_dim is None else (x_dim, y_dim))
        return {
            **p,
            "x": p["x"].tolist(),
            "y": p["y"].tolist(),
            "index": p["index"].tolist(),
            "labels": None if p["labels"] is None else p["labels"].tolist(),
            "factors": None if p["factors"] is None else {k: v.tolist() for k, v in p["factors"].items()},
            "mean": p["mean"].tolist(),
            "basis": p["basis"].tolist(),
        }

    @app.get("/api/test/{index}", response_model=TestItem, summary="One test image, its label and latent mean")
    def test_item(index: Annotated[int, PathParam(ge=0, le=n_test - 1, description=hints["index"])]) -> dict[str, Any]:
        x, label, z = explorer.test_item(index)
        return {**_images(x[None]), "index": index, "label": label, "z": z.tolist()}

    @app.post("/api/decode", response_model=DecodeResponse, summary="Pixel means of p(x|z) for latents z")
    def decode(req: DecodeRequest) -> dict[str, Any]:
        return _images(explorer.decode(np.asarray(req.z, dtype=np.float32), req.label))

    def _encode(x: np.ndarray, label: int | None) -> dict[str, Any]:
        loc, logvar, recon = explorer.encode(x, label)
        return {**_images(recon), "loc": loc[0].tolist(), "logvar": None if logvar is None else logvar[0].tolist()}

    @app.post(
        "/api/encode",
        response_model=EncodeResponse,
        summary="Encode one image given as numbers: q(z|x) and the reconstruction decode(loc)",
    )
    def encode(req: EncodeRequest) -> dict[str, Any]:
        return _encode(np.asarray(req.pixels, dtype=np.float32).reshape(1, c, h, w), req.label)

    @app.post(
        "/api/encode/png",
        response_model=EncodeResponse,
        summary="Encode one image given as a base64 PNG: q(z|x) and the reconstruction",
    )
    def encode_png(req: EncodePngRequest) -> dict[str, Any]:
        return _encode(_read_png(req.png, c, h, w, cfg.max_png_bytes)[None], req.label)

    @app.post(
        "/api/interpolate",
        response_model=InterpolateResponse,
        summary="Decode the path between the latent means of two test images",
    )
    def interpolate(req: InterpolateRequest) -> dict[str, Any]:
        z, images = explorer.interpolate(req.a, req.b, req.steps, req.spherical)
        return {**_images(images), "z": z.tolist()}

    @app.get(
        "/api/traverse/{index}",
        response_model=TraverseResponse,
        summary="Latent traversals of a test image: each dimension of its code swept from -3 to 3",
    )
    def traverse(
        index: Annotated[int, PathParam(ge=0, le=n_test - 1, description=hints["index"])],
        steps: Annotated[int, Query(ge=2, le=cfg.max_steps, description=f"values per row, 2..{cfg.max_steps}")] = 9,
    ) -> dict[str, Any]:
        if not explorer.can_traverse:  # the model's fault, not the index's: say which model
            d, cond = explorer.model.latent_size, explorer.conditional
            raise _unprocessable(
                ("model",),
                f"traversals need an unconditional model with more than 2 latent dimensions; this one has {d}"
                + (" and is conditional" if cond else ""),
            )
        t = explorer.traverse(index, steps)
        return {
            **_images(t["images"]),
            "dims": t["dims"].tolist(),
            "kl": t["kl"].tolist(),
            "values": t["values"].tolist(),
        }

    @app.post(
        "/api/sample",
        response_model=SampleResponse,
        summary=f"Decoded draws z ~ p(z), the model's own prior: {explorer.model.prior_description}",
    )
    def sample(req: SampleRequest) -> dict[str, Any]:
        seed = secrets.randbelow(2**31) if req.seed is None else req.seed
        return {**_images(explorer.sample(req.n, req.label, seed)), "seed": seed}

    return app


def _version() -> str:
    from vaelab._version import __version__

    return __version__


def app_from_run(
    run_dir: str | Path,
    cfg: ServeConfig = ServeConfig(),
    device: str = "cpu",
    weights: str = "model.safetensors",
    data_dir: str | None = None,
) -> FastAPI:
    """Load a run folder's model (read-only) and its dataset's test split, and build the app."""
    from dataclasses import replace as dc_replace

    from vaelab.data import load_splits
    from vaelab.platform.device import resolve_device
    from vaelab.run.checkpoint import load, read_config

    run_dir = Path(run_dir)
    rcfg = read_config(run_dir)
    model = load(run_dir, weights=weights, device=resolve_device(device), cfg=rcfg)
    dcfg = dc_replace(rcfg.data, limit=None, data_dir=data_dir or rcfg.data.data_dir)
    splits = load_splits(dcfg)
    explorer = Explorer(
        model, splits.test, splits.class_names, cfg, name=run_dir.name, dataset=splits.name,
        factor_names=splits.factor_names,
    )  # fmt: skip
    return create_app(explorer)


def open_run(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    device: str = "cpu",
    weights: str = "model.safetensors",
    data_dir: str | None = None,
) -> tuple[FastAPI, socket.socket]:
    """`vaelab serve`'s set-up: a socket listening on host:port (bound first, so that a taken port
    fails before anything is loaded) and the app of a run folder (:func:`app_from_run`); the socket
    is closed again when the run cannot be loaded. Serve them with :func:`run`."""
    sock = bind(host, port)
    try:
        return app_from_run(run_dir, cfg, device=device, weights=weights, data_dir=data_dir), sock
    except BaseException:
        sock.close()
        raise


def exposure_warnings(host: str, allow_hosts: tuple[str, ...] = ()) -> list[str]:
    """What `vaelab serve` says when it listens beyond loopback: anyone who reaches the machine can
    use the explorer, and (on all addresses) which Host names requests must carry."""
    if is_loopback(host):
        return []
    out = [
        f"warning: listening on {host}, not loopback: anyone who can reach this machine can use the "
        f"explorer (it has no authentication); use --host 127.0.0.1 to keep it local"
    ]
    if host in ("0.0.0.0", "::") and not allow_hosts:
        out.append(
            f"note: requests must name this machine in their Host header; give the names clients use "
            f"with --allow-host NAME (e.g. --allow-host {socket.gethostname()})"
        )
    return out


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
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); pass another --port, or --port 0 for any free one"
        ) from None
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
