"""Every variant of the VAE family through the whole product, as a user runs it: `vaelab train`,
`--resume` (bit-identical on CPU to an uninterrupted run), `vaelab eval` (an NLL on binary pixels),
`vaelab sample`, the explorer's API, and `vaelab export` (which writes or refuses with one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaelab
from conftest import make_images, run_cli

VARIANTS = {
    "mog": ["--prior", "mog", "--prior-components", "3"],
    "vamp": ["--prior", "vamp", "--prior-components", "5"],
    "planar": ["--posterior", "planar", "--flow-steps", "2"],
    "iaf": ["--posterior", "iaf", "--flow-steps", "2"],
    "two-layers": ["--model.layers", "[{hidden = [12], latent_dim = 4}, {hidden = [8], latent_dim = 2}]"],
    "iwae-dreg": ["--objective", "iwae", "--k", "3", "--estimator", "dreg"],
    "iwae-stl": ["--objective", "iwae", "--k", "3", "--estimator", "stl"],
    "elbo-stl": ["--estimator", "stl"],
    "miwae": ["--objective", "miwae", "--m", "2", "--k", "2"],
    "piwae": ["--objective", "piwae", "--m", "2", "--k", "2"],
    "ciwae": ["--objective", "ciwae", "--k", "3"],
    "bernoulli-ar": ["--likelihood", "bernoulli-ar", "--objective", "iwae", "--k", "3", "--estimator", "dreg"],
}
EXPORTS = {"planar": False, "iaf": False, "two-layers": False, "bernoulli-ar": False}  # the others export


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    x, y = make_images(400)
    path = tmp_path_factory.mktemp("variants") / "tiny.npz"
    np.savez(path, x=x[:, 0], y=y)
    return path


def train_args(dataset: Path, out: Path, flags: list[str], epochs: int) -> list[str]:
    args = [
        "train",
        "--preset",
        "tiny",
        "--dataset",
        str(dataset),
        "--binarize",
        "dynamic",
        "--batch-size",
        "40",
        "--epochs",
        str(epochs),
        "--seed",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-plots",
        "-q",
        *flags,
    ]
    if "--model.layers" not in flags:
        args[3:3] = ["--hidden", "12"]
    return args


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_trains_resumes_evaluates_samples_serves_and_exports(variant, dataset, tmp_path, capsys):
    flags = VARIANTS[variant]
    whole, split = tmp_path / "whole", tmp_path / "split"
    code, out, err = run_cli(train_args(dataset, whole, flags, 2), capsys)
    assert code == 0, err
    assert "test ELBO" in out
    code, _, err = run_cli(train_args(dataset, split, flags, 1), capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", str(split), "--epochs", "2", "--no-plots", "-q"], capsys)
    assert code == 0, err
    a, b = load_file(whole / "model.safetensors"), load_file(split / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-identical"

    code, out, err = run_cli(["eval", str(whole), "--k", "20", "--json", "--threads", "1"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["nll"] > 0 and report["is_density"]
    assert -report["nll"] >= report["elbo"] - 3 * report["elbo_stderr"]  # log p(x) >= ELBO, up to noise

    code, out, err = run_cli(
        ["sample", str(whole), "-n", "4", "-o", str(tmp_path / "s.png"), "--npy", str(tmp_path / "s.npy")], capsys
    )
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4, 1, 8, 8) and np.isfinite(samples).all()

    from fastapi.testclient import TestClient

    from vaelab.serve import ServeConfig, app_from_run

    client = TestClient(app_from_run(str(whole), ServeConfig(max_points=50)), base_url="http://localhost")
    info = client.get("/api/info").json()
    model = vaelab.load(whole)
    assert info["prior"] == model.cfg.prior and info["posterior"] == model.cfg.posterior
    sample = client.post("/api/sample", json={"n": 3, "seed": 5})
    assert sample.status_code == 200
    with torch.no_grad():  # the page draws from the model's own prior, as the library does
        want = model.sample(3, generator=torch.Generator().manual_seed(5)).numpy()
    got = np.array(sample.json()["images"]).reshape(want.shape)
    np.testing.assert_allclose(got, want, atol=6e-5)
    enc = client.post("/api/encode", json={"pixels": np.zeros((8, 8)).tolist()})
    assert enc.status_code == 200 and len(enc.json()["loc"]) == model.cfg.latent_dim

    if EXPORTS.get(variant, True):
        code, _, err = run_cli(["export", str(whole), "--format", "pt2", "--out", str(tmp_path / "exp")], capsys)
        assert code == 0, err
    else:
        code, _, err = run_cli(["export", str(whole), "--out", str(tmp_path / "exp")], capsys)
        assert code == 2 and err.count("\n") == 1 and "cannot express" in err, err
        assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (
            ["--posterior", "iaf", "--estimator", "dreg", "--objective", "iwae", "--k", "2"],
            r"estimator dreg needs log q\(z\|x\) at stopped posterior parameters, which this model \(posterior iaf\)",
        ),
        (["--estimator", "dreg"], r"estimator dreg \(doubly reparameterized\) is for the iwae and miwae objectives"),
        (["--m", "3"], r"m 3 groups of samples belong to the miwae and piwae objectives"),
        (["--prior", "vamp", "--conditional"], r"prior vamp: the pseudo-inputs carry no label"),
        (["--schedule", "time"], r"schedule time follows the clock over --max-minutes"),
        (["--objective", "piwae", "--m", "2", "--k", "2", "--estimator", "stl"], r"estimator stl with objective piwae"),
    ],
)
def test_combinations_that_do_not_exist_are_refused(flags, pattern, dataset, tmp_path, capsys):
    import re

    code, _, err = run_cli(train_args(dataset, tmp_path / "run", flags, 1), capsys)
    assert code == 2 and re.search(pattern, err), err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
