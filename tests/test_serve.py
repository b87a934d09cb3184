"""The explorer's web app through FastAPI's test client: every endpoint against the library's own
verbs, every validation error (a 422 with a clear message, never a 500), concurrency, the static
page (no external links), binding rules, the `vaelab serve` command, and a schemathesis fuzz run
of the API from its OpenAPI schema."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from conftest import answered, make_images
from vaelab.config import ModelConfig
from vaelab.data import ImageData, to_float
from vaelab.errors import ConfigError
from vaelab.models import VAE, interpolate_latents
from vaelab.plots import latent_axes

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient as _TestClient  # noqa: E402

from vaelab import serve as srv  # noqa: E402
from vaelab.serve import Explorer, ServeConfig, create_app  # noqa: E402

N_TEST = 50


def TestClient(app, **kw) -> _TestClient:
    """Starlette's test client, addressed as the explorer's page is (its default Host, `testserver`,
    is not an allowed host: see test_a_foreign_host_header_is_refused)."""
    return _TestClient(app, **{"base_url": "http://localhost", **kw})


ATOL = 6e-5  # images travel rounded to 4 decimals


def make_explorer(
    latent_dim: int = 2,
    num_classes: int = 0,
    cfg: ServeConfig = ServeConfig(),
    n: int = N_TEST,
    prior: str = "normal",
    likelihood: str = "bernoulli",
) -> Explorer:
    torch.manual_seed(0)
    x, y = make_images(n, seed=1)
    mc = ModelConfig(
        input_shape=(1, 8, 8),
        hidden=(16,),
        latent_dim=latent_dim,
        num_classes=num_classes,
        prior=prior,
        likelihood=likelihood,
    )
    model = VAE(mc)
    return Explorer(
        model,
        ImageData(torch.from_numpy(x), torch.from_numpy(y)),
        ("a", "b", "c", "d"),
        cfg,
        name="test-run",
        dataset="quadrants",
    )


@pytest.fixture(scope="module")
def plain() -> Explorer:
    return make_explorer()


@pytest.fixture(scope="module")
def client(plain) -> TestClient:
    return TestClient(create_app(plain))


@pytest.fixture(scope="module")
def cond() -> Explorer:
    return make_explorer(latent_dim=3, num_classes=4)


@pytest.fixture(scope="module")
def cond_client(cond) -> TestClient:
    return TestClient(create_app(cond))


def images_of(doc: dict) -> np.ndarray:
    return np.array(doc["images"], dtype=np.float64).reshape(-1, *doc["shape"])


def float_images(plain) -> torch.Tensor:
    return to_float(plain.test.images)


# -- every endpoint gives what the library gives ---------------------------------------------------


def test_info(client):
    doc = client.get("/api/info").json()
    assert doc == {
        "name": "test-run",
        "dataset": "quadrants",
        "latent_dim": 2,
        "input_shape": [1, 8, 8],
        "num_classes": 0,
        "class_names": ["a", "b", "c", "d"],
        "likelihood": "bernoulli",
        "prior": "normal",
        "prior_description": "N(0, I)",
        "samples_show": "pixel means of p(x|z)",
        "draw_title": "Draw an image",  # the data are not MNIST's digits
        "posterior": "gaussian",
        "layers": [],
        "arch": "mlp",
        "hidden": [16],
        "num_parameters": (64 * 16 + 16) + (16 * 4 + 4) + (2 * 16 + 16) + (16 * 64 + 64),
        "test_images": N_TEST,
        "points": N_TEST,
        "has_labels": True,
        "factor_names": [],
        "can_traverse": False,  # D = 2
        "limits": {
            "max_batch": 256,
            "max_abs_latent": 1000.0,
            "max_steps": 32,
            "max_samples": 64,
            "max_png_bytes": 256 * 1024,
        },
    }


def test_points_on_two_chosen_dimensions_are_those_coordinates():
    ex = make_explorer(latent_dim=5)
    c = TestClient(create_app(ex))
    pca = c.get("/api/points").json()
    doc = c.get("/api/points", params={"x_dim": 3, "y_dim": 1}).json()
    assert pca["plane"] == "pca" and doc["plane"] == "dims" and (doc["x_label"], doc["y_label"]) == ("z4", "z2")
    assert doc["index"] == pca["index"] and doc["labels"] == pca["labels"]  # the same points, in the same order
    with torch.no_grad():
        z = ex.model.encode_mean(float_images(ex)).numpy()
    np.testing.assert_allclose(doc["x"], z[:, 3], atol=1e-6)
    np.testing.assert_allclose(doc["y"], z[:, 1], atol=1e-6)
    np.testing.assert_allclose(doc["basis"], np.eye(5)[[3, 1]])  # plane = basis (z - mean), mean 0
    assert doc["mean"] == [0.0] * 5
    assert TestClient(create_app(make_explorer())).get("/api/points").json()["plane"] == "latent"


@pytest.mark.parametrize(
    "params",
    [{"x_dim": 2}, {"y_dim": 0}, {"x_dim": 1, "y_dim": 1}, {"x_dim": 5, "y_dim": 0}, {"x_dim": -1, "y_dim": 0}],
)
def test_points_refuse_bad_dimensions(params):
    r = TestClient(create_app(make_explorer(latent_dim=5))).get("/api/points", params=params)
    assert r.status_code == 422 and answered(r.json()["message"])


def test_points_are_the_latent_means_of_the_test_set(client, plain):
    doc = client.get("/api/points").json()
    assert doc["index"] == list(range(N_TEST)) and doc["labels"] == plain.test.labels.tolist()
    with torch.no_grad():
        z = plain.model.encode_mean(float_images(plain)).numpy()
    np.testing.assert_allclose(np.stack([doc["x"], doc["y"]], 1), z, rtol=1e-6, atol=1e-6)
    assert (doc["x_label"], doc["y_label"]) == ("z1", "z2")
    assert doc["mean"] == [0.0, 0.0] and doc["basis"] == [[1.0, 0.0], [0.0, 1.0]]
    assert doc["z_bound"] == max(4.0, float(np.ceil(np.abs(z).max())))
    assert client.get("/api/points").json() == doc  # cached: computed once
    assert plain.points() is plain.points()


def test_points_subsample_and_pca_plane():
    ex = make_explorer(latent_dim=5, cfg=ServeConfig(max_points=30, seed=3))
    doc = TestClient(create_app(ex)).get("/api/points").json()
    want = np.sort(np.random.default_rng(3).choice(N_TEST, size=30, replace=False))
    assert doc["index"] == want.tolist()
    with torch.no_grad():
        z = ex.model.encode_mean(to_float(ex.test.images[want])).double().numpy()
    pts, xl, yl = latent_axes(z)
    np.testing.assert_allclose(np.stack([doc["x"], doc["y"]], 1), pts, atol=1e-9)
    assert (doc["x_label"], doc["y_label"]) == (
        xl.replace("$", "").replace("_", ""),
        yl.replace("$", "").replace("_", ""),
    )
    assert doc["x_label"].startswith("PC 1 of z")
    # The page moves the cursor with this map: it reproduces the library's projection exactly,
    # and its rows are orthonormal (principal directions), so moving in the plane is exact too.
    mean, basis = np.array(doc["mean"]), np.array(doc["basis"])
    np.testing.assert_allclose((z - mean) @ basis.T, pts, atol=1e-9)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-9)


def test_plane_map_for_one_and_two_dims():
    mean, basis = srv.plane_map(np.ones((4, 1)), latent_axes(np.ones((4, 1)))[0])
    assert mean.tolist() == [0.0] and basis.tolist() == [[1.0], [0.0]]
    z = np.random.default_rng(0).normal(size=(6, 2))
    mean, basis = srv.plane_map(z, latent_axes(z)[0])
    np.testing.assert_array_equal((z - mean) @ basis.T, latent_axes(z)[0])


def test_test_item(client, plain):
    doc = client.get("/api/test/7").json()
    x = float_images(plain)[7]
    assert doc["index"] == 7 and doc["label"] == int(plain.test.labels[7]) and doc["shape"] == [1, 8, 8]
    np.testing.assert_allclose(images_of(doc)[0], x.numpy(), atol=ATOL)
    with torch.no_grad():
        np.testing.assert_allclose(doc["z"], plain.model.encode_mean(x[None])[0].numpy(), rtol=1e-6, atol=1e-6)


def test_decode_matches_the_model(client, plain):
    z = [[0.0, 0.0], [1.5, -2.0], [-3.25, 0.5]]
    doc = client.post("/api/decode", json={"z": z}).json()
    assert doc["shape"] == [1, 8, 8] and len(doc["images"]) == 3
    with torch.no_grad():
        want = plain.model.decode(torch.tensor(z)).numpy()
    np.testing.assert_allclose(images_of(doc), want, atol=ATOL)
    assert images_of(doc).min() >= 0 and images_of(doc).max() <= 1


def test_decode_at_the_bounds_is_finite(client):
    doc = client.post("/api/decode", json={"z": [[1000, -1000]]}).json()
    assert np.isfinite(images_of(doc)).all()


def test_encode_pixels_and_png_agree_with_the_model(client, plain):
    from PIL import Image

    u8 = plain.test.images[3, 0].numpy()  # (8, 8) uint8
    x = torch.from_numpy(u8).float().div(255)[None, None]
    with torch.no_grad():
        loc, logvar = plain.model.encode(x)
        recon = plain.model.decode(loc)
    doc = client.post("/api/encode", json={"pixels": x[0, 0].tolist()}).json()
    np.testing.assert_allclose(doc["loc"], loc[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(doc["logvar"], logvar[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(images_of(doc), recon.numpy(), atol=ATOL)

    buf = io.BytesIO()
    Image.fromarray(u8, mode="L").save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    for png in (b64, "data:image/png;base64," + b64):
        got = client.post("/api/encode/png", json={"png": png}).json()
        assert got["loc"] == doc["loc"] and got["images"] == doc["images"]


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolate_is_the_library_path(client, plain, spherical):
    doc = client.post("/api/interpolate", json={"a": 2, "b": 9, "steps": 7, "spherical": spherical}).json()
    with torch.no_grad():
        loc = plain.model.encode_mean(float_images(plain)[[2, 9]])
        z = interpolate_latents(loc[0], loc[1], 7, spherical)
        images = plain.model.decode(z)
    np.testing.assert_allclose(doc["z"], z.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(doc["z"][0], loc[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(doc["z"][-1], loc[1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(images_of(doc), images.numpy(), atol=ATOL)


def test_sample_is_reproducible_by_seed(client, plain):
    doc = client.post("/api/sample", json={"n": 5, "seed": 42}).json()
    assert doc["seed"] == 42 and len(doc["images"]) == 5
    with torch.no_grad():
        want = plain.model.sample(5, generator=torch.Generator().manual_seed(42)).numpy()
    np.testing.assert_allclose(images_of(doc), want, atol=ATOL)
    fresh = client.post("/api/sample", json={}).json()
    assert len(fresh["images"]) == 16 and 0 <= fresh["seed"] < 2**31
    again = client.post("/api/sample", json={"seed": fresh["seed"]}).json()
    assert again["images"] == fresh["images"]


@pytest.mark.parametrize("prior, words", [("normal", "N(0, I)"), ("mog", "mixture"), ("vamp", "VampPrior")])
def test_samples_are_named_by_the_models_own_prior(prior, words):
    """#23: the explorer called every prior N(0, I). It names it as `vaelab sample` does, from
    model.prior_description, in the API, its schema and (through /api/info) the page."""
    ex = make_explorer(prior=prior)
    c = TestClient(create_app(ex))
    info = c.get("/api/info").json()
    assert info["prior"] == prior
    assert info["prior_description"] == ex.model.prior_description and words in info["prior_description"]
    summary = c.get("/openapi.json").json()["paths"]["/api/sample"]["post"]["summary"]
    assert ex.model.prior_description in summary
    if prior != "normal":
        assert "N(0, I)" not in summary
    # the page writes no prior of its own: its heading is filled in from /api/info
    assert "N(0, I)" not in c.get("/").text
    js = c.get("/static/app.js").text
    assert "N(0, I)" not in js and "i.prior_description" in js


@pytest.mark.parametrize(
    "dataset, title",
    [
        ("mnist", "Draw a digit"),
        ("fashion-mnist", "Draw an image"),
        ("shapes2d", "Draw an image"),
        ("cifar10", "Draw an image"),
        ("my-photos", "Draw an image"),  # a folder of colour images
    ],
)
def test_the_drawing_panel_asks_for_a_digit_only_for_mnist(plain, dataset, title):
    ex = Explorer(plain.model, plain.test, dataset=dataset)
    c = TestClient(create_app(ex))
    assert c.get("/api/info").json()["draw_title"] == title
    assert "digit" not in c.get("/").text  # the page's heading before /api/info answers
    assert "i.draw_title" in c.get("/static/app.js").text


def test_conditional_model_uses_the_label(cond_client, cond):
    z = [[0.5, -0.5, 1.0]]
    with torch.no_grad():
        want = [cond.model.decode(torch.tensor(z), torch.tensor([k])).numpy() for k in range(4)]
        assert np.abs(want[0] - want[3]).max() > 1e-3  # the label matters
    for k in range(4):
        doc = cond_client.post("/api/decode", json={"z": z, "label": k}).json()
        np.testing.assert_allclose(images_of(doc), want[k], atol=ATOL)
    doc = cond_client.post("/api/sample", json={"n": 3, "seed": 1, "label": 2}).json()
    with torch.no_grad():
        np.testing.assert_allclose(
            images_of(doc), cond.model.sample(3, 2, generator=torch.Generator().manual_seed(1)).numpy(), atol=ATOL
        )
    x = to_float(cond.test.images[:1])
    doc = cond_client.post("/api/encode", json={"pixels": x[0, 0].tolist(), "label": 1}).json()
    with torch.no_grad():
        np.testing.assert_allclose(doc["loc"], cond.model.encode_mean(x, torch.tensor([1]))[0].numpy(), atol=1e-5)
    # interpolation: each end encoded with its own label, the path decoded with A's
    a, b = 0, 1
    ya, yb = cond.test.labels[[a, b]]
    doc = cond_client.post("/api/interpolate", json={"a": a, "b": b, "steps": 4}).json()
    with torch.no_grad():
        xs = to_float(cond.test.images[[a, b]])
        loc = cond.model.encode_mean(xs, torch.stack([ya, yb]))
        path = interpolate_latents(loc[0], loc[1], 4)
        images = cond.model.decode(path, ya.expand(4))
    np.testing.assert_allclose(doc["z"], path.numpy(), atol=1e-5)
    np.testing.assert_allclose(images_of(doc), images.numpy(), atol=ATOL)
    pts = cond_client.get("/api/points").json()
    assert pts["x_label"].startswith("PC 1") and len(pts["basis"][0]) == 3


# -- every validation error is a 422 with a clear message ------------------------------------------


def png_b64(w: int, h: int, mode: str = "L") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


GOOD_PIXELS = [[0.5] * 8 for _ in range(8)]

BAD_PLAIN = [
    # (method, path, JSON body (str: raw), words the message must contain)
    ("post", "/api/decode", {"z": [[0.0]]}, ["body.z.0", "at least 2 items", "D = 2"]),
    ("post", "/api/decode", {"z": [[0.0, 1.0, 2.0]]}, ["body.z.0", "at most 2 items"]),
    ("post", "/api/decode", {"z": []}, ["body.z", "at least 1 item"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0]] * 257}, ["body.z", "at most 256 items"]),
    ("post", "/api/decode", '{"z": [[NaN, 0]]}', ["body.z.0.0", "finite number"]),
    ("post", "/api/decode", '{"z": [[0, Infinity]]}', ["body.z.0.1", "finite number"]),
    ("post", "/api/decode", '{"z": [[0, -Infinity]]}', ["body.z.0.1", "finite number"]),
    ("post", "/api/decode", {"z": [[1e4, 0.0]]}, ["body.z.0.0", "less than or equal to 1000"]),
    ("post", "/api/decode", '{"z": [[1e400, 0]]}', ["body.z.0.0", "finite number"]),  # parses as inf
    ("post", "/api/decode", '{"z": [[' + "9" * 5000 + ", 0]]}", ["body", "not valid JSON"]),  # too many digits
    ("post", "/api/decode", {"z": [[0.0, -1e30]]}, ["body.z.0.1", "greater than or equal to -1000"]),
    ("post", "/api/decode", {"z": [["1", 0.0]]}, ["body.z.0.0", "valid number"]),
    ("post", "/api/decode", {"z": [[True, 0.0]]}, ["body.z.0.0", "valid number"]),
    ("post", "/api/decode", {"z": [0.0, 0.0]}, ["body.z.0", "valid list"]),
    ("post", "/api/decode", {"z": "0,0"}, ["body.z", "valid list"]),
    ("post", "/api/decode", {}, ["body.z", "Field required"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0]], "temperature": 1}, ["body.temperature", "Extra inputs"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0]], "label": 3}, ["body.label", "not conditional", "omit label"]),
    ("post", "/api/decode", "[1, 2]", ["body", "valid dictionary"]),
    ("post", "/api/decode", "{bad json", ["body", "JSON"]),
    ("post", "/api/decode", b"\xff\xfe{}", ["body", "JSON decode error"]),
    (
        "post",
        "/api/encode",
        {"pixels": GOOD_PIXELS[:7]},
        ["body.pixels", "at least 8 items", "8 rows of 8 grey values"],
    ),
    ("post", "/api/encode", {"pixels": [[0.5] * 9] + GOOD_PIXELS[1:]}, ["body.pixels.0", "at most 8 items"]),
    ("post", "/api/encode", {"pixels": [[0.5] * 8 for _ in range(2000)]}, ["body.pixels", "at most 8 items"]),
    (
        "post",
        "/api/encode",
        {"pixels": [[2.0] + [0.5] * 7] + GOOD_PIXELS[1:]},
        ["body.pixels.0.0", "less than or equal to 1", "divide 0-255"],
    ),
    (
        "post",
        "/api/encode",
        {"pixels": [[-0.1] + [0.5] * 7] + GOOD_PIXELS[1:]},
        ["body.pixels.0.0", "greater than or equal to 0"],
    ),
    ("post", "/api/encode", '{"pixels": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', ["body.pixels.0.0", "finite"]),
    ("post", "/api/encode", {}, ["body.pixels", "Field required"]),
    ("post", "/api/encode", {"pixels": GOOD_PIXELS, "label": 0}, ["body.label", "not conditional"]),
    ("post", "/api/encode/png", {"png": "%%%not base64%%%"}, ["body.png", "not valid base64"]),
    ("post", "/api/encode/png", {"png": base64.b64encode(b"GIF89a not a png").decode()}, ["body.png", "not a PNG"]),
    ("post", "/api/encode/png", {"png": png_b64(28, 28)}, ["body.png", "28x28", "resize it to 8x8"]),
    ("post", "/api/encode/png", {"png": png_b64(8, 8)[:40]}, ["body.png"]),
    ("post", "/api/encode/png", {"png": "data:image/png," + png_b64(8, 8)}, ["body.png", "base64-encoded"]),
    ("post", "/api/encode/png", {"png": "A" * 400_000}, ["body.png", "at most"]),
    ("post", "/api/encode/png", {"png": ""}, ["body.png", "at least 1 character"]),
    ("post", "/api/encode/png", {}, ["body.png", "Field required"]),
    (
        "post",
        "/api/interpolate",
        {"a": 0, "b": N_TEST},
        ["body.b", f"less than or equal to {N_TEST - 1}", "test-set index"],
    ),
    ("post", "/api/interpolate", {"a": -1, "b": 0}, ["body.a", "greater than or equal to 0"]),
    ("post", "/api/interpolate", {"a": 0, "b": 1, "steps": 1}, ["body.steps", "greater than or equal to 2"]),
    ("post", "/api/interpolate", {"a": 0, "b": 1, "steps": 33}, ["body.steps", "less than or equal to 32"]),
    ("post", "/api/interpolate", {"a": 0, "b": 1, "steps": 2.5}, ["body.steps", "valid integer"]),
    ("post", "/api/interpolate", {"a": "0", "b": 1}, ["body.a", "valid integer"]),
    ("post", "/api/interpolate", {"a": 0, "b": 1, "spherical": "yes"}, ["body.spherical", "valid boolean"]),
    ("post", "/api/interpolate", {"a": 0}, ["body.b", "Field required"]),
    ("post", "/api/interpolate", {"a": 10**30, "b": 0}, ["body.a", "less than or equal to"]),
    ("post", "/api/sample", {"n": 0}, ["body.n", "greater than or equal to 1"]),
    ("post", "/api/sample", {"n": 65}, ["body.n", "less than or equal to 64"]),
    ("post", "/api/sample", {"n": True}, ["body.n", "valid integer"]),
    ("post", "/api/sample", {"seed": -1}, ["body.seed", "greater than or equal to 0"]),
    ("post", "/api/sample", {"seed": 2**31}, ["body.seed", "less than or equal to 2147483647"]),
    ("post", "/api/sample", {"label": 1}, ["body.label", "not conditional"]),
    ("get", f"/api/test/{N_TEST}", None, ["path.index", f"less than or equal to {N_TEST - 1}"]),
    ("get", "/api/test/-1", None, ["path.index", "greater than or equal to 0"]),
    ("get", "/api/test/abc", None, ["path.index", "valid integer"]),
    ("get", "/api/test/1.5", None, ["path.index", "valid integer"]),
]

BAD_COND = [
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]]}, ["body.label", "Field required", "class label in 0..3"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]], "label": -1}, ["body.label", "greater than or equal to 0"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]], "label": 4}, ["body.label", "less than or equal to 3"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]], "label": "1"}, ["body.label", "valid integer"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]], "label": 1.5}, ["body.label", "valid integer"]),
    ("post", "/api/decode", {"z": [[0.0, 0.0, 0.0]], "label": None}, ["body.label", "valid integer"]),
    ("post", "/api/sample", {"n": 2}, ["body.label", "Field required"]),
    ("post", "/api/encode", {"pixels": GOOD_PIXELS}, ["body.label", "Field required"]),
    ("post", "/api/encode/png", {"png": png_b64(8, 8), "label": 9}, ["body.label", "less than or equal to 3"]),
]


def _send(c: TestClient, method: str, path: str, body):
    if method == "get":
        return c.get(path)
    if isinstance(body, (str, bytes)):
        return c.post(path, content=body, headers={"content-type": "application/json"})
    return c.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "method,path,body,words", BAD_PLAIN, ids=[f"{p}-{i}" for i, (_, p, _, _) in enumerate(BAD_PLAIN)]
)
def test_bad_requests_are_422_with_a_message(client, method, path, body, words):
    r = _send(client, method, path, body)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["detail"] and all({"loc", "msg", "type"} <= set(d) for d in doc["detail"])
    for w in words:
        assert w in doc["message"], (w, doc["message"])


@pytest.mark.parametrize(
    "method,path,body,words", BAD_COND, ids=[f"{p}-{i}" for i, (_, p, _, _) in enumerate(BAD_COND)]
)
def test_bad_labels_of_a_conditional_model(cond_client, method, path, body, words):
    r = _send(cond_client, method, path, body)
    assert r.status_code == 422, r.text
    for w in words:
        assert w in r.json()["message"], (w, r.json()["message"])


def test_many_errors_are_summarised(client):
    r = client.post("/api/decode", json={"z": [[None, None], [None, None], [None, None]]})
    assert r.status_code == 422 and len(r.json()["detail"]) == 6
    assert r.json()["message"].endswith("; and 3 more")


def test_png_size_limits_and_colour_pngs():
    from PIL import Image

    noisy = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, mode="L").save(buf, format="PNG")
    raw = buf.getvalue()
    png = base64.b64encode(raw).decode()
    # The decoded size is checked against the limit (the string's length only bounds it from above).
    c = TestClient(create_app(make_explorer(cfg=ServeConfig(max_png_bytes=len(raw) - 1))))
    r = c.post("/api/encode/png", json={"png": png})
    assert r.status_code == 422 and f"the PNG has {len(raw)} bytes; the limit is {len(raw) - 1}" in r.json()["message"]
    c = TestClient(create_app(make_explorer(cfg=ServeConfig(max_png_bytes=20))))
    r = c.post("/api/encode/png", json={"png": png})
    assert r.status_code == 422 and "at most 20 bytes" in r.json()["message"]
    # An RGB PNG of the right size is read as its grey values (L = luma), like the page's canvas.
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(buf, format="PNG")
    r = TestClient(create_app(make_explorer())).post(
        "/api/encode/png", json={"png": base64.b64encode(buf.getvalue()).decode()}
    )
    assert r.status_code == 200


def test_truncated_png_is_refused(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(buf, format="PNG")
    r = client.post("/api/encode/png", json={"png": base64.b64encode(buf.getvalue()[:60]).decode()})
    assert r.status_code == 422 and "cannot be read" in r.json()["message"]


def test_oversized_body_is_422_before_parsing(client):
    r = client.post("/api/decode", content=b"x" * (4 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "limit is 4194304" in r.json()["message"]


def test_library_errors_become_422(plain, monkeypatch):
    c = TestClient(create_app(plain))

    def boom(*a, **k):
        raise ConfigError("the decoder produced non-finite pixels for this z; use smaller latent values")

    monkeypatch.setattr(plain, "decode", boom)
    r = c.post("/api/decode", json={"z": [[0.0, 0.0]]})
    assert r.status_code == 422 and "non-finite pixels" in r.json()["message"]


def test_unknown_routes_and_methods_are_not_server_errors(client):
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/api/decode").status_code == 405
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN


def test_explorer_checks_its_inputs():
    torch.manual_seed(0)
    x, _ = make_images(10)
    model = VAE(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2))
    with pytest.raises(ConfigError, match="test images are"):
        Explorer(model, ImageData(torch.zeros(3, 1, 4, 4, dtype=torch.uint8)))
    with pytest.raises(ConfigError, match="empty"):
        Explorer(model, ImageData(torch.zeros(0, 1, 8, 8, dtype=torch.uint8)))
    cmodel = VAE(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, num_classes=4))
    with pytest.raises(ConfigError, match="no labels"):
        Explorer(cmodel, ImageData(torch.from_numpy(x)))
    doc = TestClient(create_app(Explorer(model, ImageData(torch.from_numpy(x))))).get("/api/test/0").json()
    assert doc["label"] is None


@pytest.mark.parametrize(
    "kw",
    [
        {"max_points": 0},
        {"max_batch": -1},
        {"max_steps": 1},
        {"max_abs_latent": float("inf")},
        {"max_samples": 1.5},
        {"max_png_bytes": True},
    ],
)
def test_serve_config_rejects_bad_limits(kw):
    with pytest.raises(ConfigError):
        ServeConfig(**kw)


# -- who may call: the Host and Origin headers ------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:8000", "[::1]:8000"])
def test_loopback_host_headers_are_answered(plain, host):
    r = TestClient(create_app(plain)).get("/api/info", headers={"host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.2", ""])
def test_a_foreign_host_header_is_refused(plain, host):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends its own name."""
    c = TestClient(create_app(plain))
    for r in (
        c.get("/api/info", headers={"host": host}),
        c.get("/", headers={"host": host}),
        c.post("/api/decode", json={"z": [[0.0, 0.0]]}, headers={"host": host}),
    ):
        assert r.status_code == 421, (host, r.status_code)
        assert "--allow-host" in answered(r.json()["message"])


def test_allow_host_adds_a_name(plain):
    ex = Explorer(plain.model, plain.test, cfg=ServeConfig(allowed_hosts=("localhost", "mybox.lan")))
    c = TestClient(create_app(ex))
    assert c.get("/api/info", headers={"host": "mybox.lan:8000"}).status_code == 200
    assert c.get("/api/info", headers={"host": "otherbox.lan:8000"}).status_code == 421


@pytest.mark.parametrize(
    "origin, status",
    [
        ("http://localhost:8000", 200),
        ("http://127.0.0.1:8000", 200),
        ("https://localhost", 200),
        ("http://evil.example", 403),
        ("null", 403),
        ("file://", 403),
        ("http://localhost.evil.example", 403),
    ],
)
def test_posts_check_the_origin_when_one_is_sent(plain, origin, status):
    c = TestClient(create_app(plain))
    r = c.post("/api/decode", json={"z": [[0.0, 0.0]]}, headers={"origin": origin})
    assert r.status_code == status, (origin, r.text)
    if status == 403:
        assert origin in answered(r.json()["message"])
    assert c.post("/api/decode", json={"z": [[0.0, 0.0]]}).status_code == 200  # no Origin (curl): passes


@pytest.mark.parametrize("hosts", [(), ("http://mybox",), ("mybox/x",), ("",), (3,)])
def test_serve_config_rejects_bad_allowed_hosts(hosts):
    with pytest.raises(ConfigError, match="allowed_hosts"):
        ServeConfig(allowed_hosts=hosts)


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers(plain):
    app = create_app(plain)
    zs = [[[0.25 * i - 2, 0.5 - 0.1 * i]] for i in range(32)]
    with torch.no_grad():
        want = [plain.model.decode(torch.tensor(z)).numpy() for z in zs]

    def call(i: int) -> np.ndarray:
        with TestClient(app) as c:
            doc = c.post("/api/decode", json={"z": zs[i]}).json()
            c.post("/api/interpolate", json={"a": i % N_TEST, "b": (i * 7) % N_TEST, "steps": 5})
            return images_of(doc)

    torch.set_num_threads(2)
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(call, range(32)))
    finally:
        torch.set_num_threads(1)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL)


def test_the_model_is_read_only(plain):
    assert not plain.model.training
    assert all(not p.requires_grad for p in plain.model.parameters())


# -- the page: served here, nothing from elsewhere -------------------------------------------------


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert '<script src="/static/app.js">' in html and 'href="/static/style.css"' in html
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("index.html", "text/html")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name


def test_no_external_links_in_the_page():
    for path in srv.STATIC.iterdir():
        text = path.read_text()
        for bad in ("http://", "https://", "//cdn", "@import", "fonts.googleapis"):
            assert bad not in text, (path.name, bad)


def test_openapi_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {
        "/api/info",
        "/api/points",
        "/api/test/{index}",
        "/api/decode",
        "/api/encode",
        "/api/encode/png",
        "/api/interpolate",
        "/api/sample",
        "/api/traverse/{index}",
    } == set(paths)
    z = schema["components"]["schemas"]["DecodeRequest"]["properties"]["z"]
    assert z["maxItems"] == 256 and z["items"]["minItems"] == 2 and z["items"]["maxItems"] == 2
    assert z["items"]["items"]["maximum"] == 1000 and z["items"]["items"]["minimum"] == -1000
    for p in ("/api/decode", "/api/encode", "/api/encode/png", "/api/interpolate", "/api/sample"):
        assert {"200", "422"} <= set(paths[p]["post"]["responses"]), p


# -- traversals and factors ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def factored() -> Explorer:
    """D = 4, and test images with two ground-truth factors."""
    torch.manual_seed(0)
    x, y = make_images(N_TEST, seed=1)
    factors = np.stack([y.astype(np.float64), np.linspace(0.0, 1.0, N_TEST)], 1)
    model = VAE(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=4))
    data = ImageData(torch.from_numpy(x), torch.from_numpy(y), factors=factors)
    return Explorer(model, data, ("a", "b", "c", "d"), name="f", dataset="q", factor_names=("quadrant", "ramp"))


def test_traverse_is_the_library_traversal(factored):
    from vaelab.analysis.factors import traversal_order, traversals

    c = TestClient(create_app(factored))
    assert c.get("/api/info").json()["can_traverse"] is True
    r = c.get("/api/traverse/7?steps=5")
    assert r.status_code == 200, r.text
    doc = r.json()
    order, kl = traversal_order(factored.model, factored.test)
    x = to_float(factored.test.images[7])
    with torch.no_grad():
        imgs, values, dims = traversals(factored.model, x, 5, order=order)
    assert doc["dims"] == dims.tolist() and doc["values"] == pytest.approx(values.tolist())
    assert doc["kl"] == pytest.approx(kl[dims].tolist(), rel=1e-6)
    np.testing.assert_allclose(images_of(doc), imgs.reshape(-1, 1, 8, 8).numpy(), atol=ATOL)
    assert len(doc["images"]) == 4 * 5


def test_traverse_is_refused_where_it_is_not_drawn(client, cond_client):
    for c, why in ((client, "this one has 2"), (cond_client, "and is conditional")):  # D = 2; a conditional model
        r = c.get("/api/traverse/0")
        assert r.status_code == 422 and "more than 2 latent dimensions" in answered(r.json()["message"])
        assert why in r.json()["message"]
        assert r.json()["detail"][0]["loc"] == ["model"] and "index" not in r.json()["message"]  # not the index's fault
        assert c.get("/api/info").json()["can_traverse"] is False


def test_points_carry_the_factors_of_their_images(factored, client):
    c = TestClient(create_app(factored))
    assert c.get("/api/info").json()["factor_names"] == ["quadrant", "ramp"]
    p = c.get("/api/points").json()
    idx = np.array(p["index"])
    np.testing.assert_allclose(p["factors"]["ramp"], factored.test.factors[idx, 1])
    np.testing.assert_allclose(p["factors"]["quadrant"], factored.test.factors[idx, 0])
    assert client.get("/api/points").json()["factors"] is None
    assert client.get("/api/info").json()["factor_names"] == []


# -- binding, and the command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert srv.is_loopback(host) is loopback


def test_bind_picks_a_free_port_and_refuses_a_taken_one():
    sock = srv.bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0 and srv.url_of(sock, "127.0.0.1") == f"http://127.0.0.1:{port}/"
        assert sock.proto == socket.IPPROTO_TCP  # see the next test
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}.*--port 0"):
            srv.bind("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(ConfigError, match="0..65535"):
        srv.bind("127.0.0.1", 70000)


def test_a_real_server_answers_with_no_delayed_ack_stall(plain):
    """Keep-alive requests must not wait for delayed ACKs: asyncio disables Nagle only on sockets
    made with IPPROTO_TCP. Checked without timing: the accepted socket has TCP_NODELAY set."""
    import asyncio

    sock = srv.bind("127.0.0.1", 0)
    seen = {}

    async def main():
        async def handle(reader, writer):
            s = writer.get_extra_info("socket")
            seen["nodelay"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        port = sock.getsockname()[1]
        _, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if "nodelay" in seen:
                break
            await asyncio.sleep(0.01)
        w.close()
        server.close()

    asyncio.run(main())
    assert seen["nodelay"] != 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("serve"), n=200, epochs=1, name="tiny")


def _cli(args, capsys):
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_app_from_run_serves_the_whole_test_set(run_dir):
    c = TestClient(srv.app_from_run(run_dir))
    info = c.get("/api/info").json()
    assert info["name"] == "run" and info["dataset"] == "tiny" and info["test_images"] == 20
    assert info["draw_title"] == "Draw an image" and info["prior_description"] == "N(0, I)"


@pytest.mark.parametrize("host,warned", [(None, False), ("0.0.0.0", True)])
def test_serve_command_prints_the_url_and_warns_off_loopback(run_dir, capsys, monkeypatch, host, warned):
    served = {}
    monkeypatch.setattr(srv, "run", lambda app, sock: served.update(app=app, port=sock.getsockname()[1]))
    args = ["serve", str(run_dir), "--port", "0", "--threads", "1"] + (["--host", host] if host else [])
    code, out, err = _cli(args, capsys)
    assert code == 0
    shown = host or "127.0.0.1"
    assert out.strip() == f"vaelab serve: http://{shown}:{served['port']}/ (Ctrl+C to stop)"
    assert ("warning: listening on 0.0.0.0, not loopback" in err) is warned
    assert TestClient(served["app"]).get("/api/info").json()["test_images"] == 20
    assert ("--allow-host" in err) is warned  # 0.0.0.0 is no name a client sends: say how to add one


def test_serve_command_answers_its_host_and_the_allowed_names_only(run_dir, capsys, monkeypatch):
    served = {}
    monkeypatch.setattr(srv, "run", lambda app, sock: served.update(app=app))
    code, _, _ = _cli(
        [
            "serve",
            str(run_dir),
            "--port",
            "0",
            "--threads",
            "1",
            "--host",
            "127.0.0.1",
            "--allow-host",
            "mybox.lan",
            "--allow-host",
            "vae.internal",
        ],
        capsys,
    )
    assert code == 0
    c = TestClient(served["app"])
    for host, status in [
        ("127.0.0.1:1", 200),
        ("localhost", 200),
        ("mybox.lan:8000", 200),
        ("vae.internal", 200),
        ("evil.example", 421),
    ]:
        assert c.get("/api/info", headers={"host": host}).status_code == status, host


def test_serve_command_rejects_a_bad_allow_host(run_dir, capsys):
    code, _, err = _cli(["serve", str(run_dir), "--port", "0", "--allow-host", "http://mybox"], capsys)
    assert code == 2 and "allowed_hosts" in err and "http://mybox" in err


def test_serve_command_errors_are_one_line(run_dir, tmp_path, capsys):
    code, _, err = _cli(["serve", str(tmp_path / "missing"), "--port", "0"], capsys)
    assert code == 2 and "no such run folder" in err and err.count("\n") == 1
    busy = srv.bind("127.0.0.1", 0)
    try:
        code, _, err = _cli(["serve", str(run_dir), "--port", str(busy.getsockname()[1])], capsys)
    finally:
        busy.close()
    assert code == 2 and "cannot listen on" in err and err.count("\n") == 1
    code, _, err = _cli(["serve", str(run_dir), "--port", "0", "--max-points", "0"], capsys)
    assert code == 2 and "max_points must be a positive integer" in err


# -- fuzzing from the OpenAPI schema (schemathesis): no request may cause a server error -----------

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

_AS_SCHEMATHESIS = ServeConfig(allowed_hosts=("testserver",))  # the Host its ASGI client sends
_PLAIN_SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_explorer(cfg=_AS_SCHEMATHESIS)))
_COND_SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(make_explorer(latent_dim=3, num_classes=4, cfg=_AS_SCHEMATHESIS))
)
# VAELAB_FUZZ_EXAMPLES=1000 for a longer run (the default keeps the suite fast).
_FUZZ = settings(
    max_examples=int(os.environ.get("VAELAB_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)


def _validate(case) -> None:
    # All of schemathesis's checks (server errors, status codes, response schemas, negative data
    # rejected, ...), except that a random base64 string that the schema allows is not a PNG.
    # Nor can the schema say that /api/points takes both x_dim and y_dim, two different ones, or neither.
    # /api/traverse answers 422 for models of D <= 2 or conditional ones, which the schema cannot say.
    excluded = (
        [positive_data_acceptance] if case.path in ("/api/encode/png", "/api/points", "/api/traverse/{index}") else []
    )
    case.call_and_validate(excluded_checks=excluded)


@_PLAIN_SCHEMA.parametrize()
@_FUZZ
def test_fuzz_api_unconditional(case):
    _validate(case)


@_COND_SCHEMA.parametrize()
@_FUZZ
def test_fuzz_api_conditional(case):
    _validate(case)


def test_the_explorer_says_an_autoregressive_models_samples_are_a_mean_field_pass():
    """#23 item 8: /api/sample shows pixel means; for bernoulli-ar these are a mean-field pass, and
    the page's heading says so (from /api/info, not a string of its own)."""
    ex = make_explorer(likelihood="bernoulli-ar")
    c = TestClient(create_app(ex))
    assert c.get("/api/info").json()["samples_show"] == "mean-field pass of p(x|z)"
    assert "i.samples_show" in c.get("/static/app.js").text
