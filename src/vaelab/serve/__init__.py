"""`vaelab serve RUN`: a latent-space explorer in the browser (FastAPI + vanilla JS, no network).

The page (``vaelab/static``) shows the test set in latent space, decodes a draggable cursor live,
interpolates between two test images, samples the model's prior and encodes an image drawn with
the mouse. Its JSON API is documented by the app's OpenAPI schema at ``/openapi.json`` (FastAPI's
``/docs`` page is switched off: it loads Swagger UI from a CDN, and this app loads nothing from the
network):

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
A request addressed to a Host the server was not started for is a 421, and a POST whose Origin is
another site is a 403 (see :class:`ServeConfig.allowed_hosts`): no page on another site can use the
explorer, even by rebinding its DNS name to this machine.

The package: explorer.py (the model side, arrays in and out), schemas.py (request and response
bodies, validation), guards.py (Host, Origin, body size, security headers), app.py (the routes,
and serving them on a socket).

The model is loaded once, read-only, and every call to it runs under one lock in inference mode,
so concurrent requests are safe. This module computes no maths of its own: it calls the model's
verbs (encode, decode, sample), :func:`vaelab.models.interpolate_latents` and
:func:`vaelab.plots.latent_axes`.
"""

try:
    import fastapi  # noqa: F401
    import pydantic  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # the optional extra is missing
    raise ImportError(f"vaelab serve needs the `serve` extra ({e.name} is missing): pip install 'vaelab[serve]'") from e

from vaelab.serve.app import (
    LOOPBACK_NAMES,
    STATIC,
    app_from_run,
    bind,
    create_app,
    exposure_warnings,
    is_loopback,
    open_run,
    run,
    url_of,
)
from vaelab.serve.explorer import Explorer, ServeConfig, plane_map
from vaelab.serve.guards import CSP

__all__ = [
    "Explorer",
    "ServeConfig",
    "create_app",
    "app_from_run",
    "open_run",
    "exposure_warnings",
    "bind",
    "url_of",
    "run",
    "is_loopback",
    "plane_map",
    "STATIC",
    "CSP",
    "LOOPBACK_NAMES",
]
