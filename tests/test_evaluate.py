"""Importance-sampled log-likelihood against exact marginals, and the honesty of `evaluate`.

The exact log p(x) of a VAE with a 1-D or 2-D latent is an integral over z that quadrature
computes to ~1e-8; the estimator must converge to it within its own standard error.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch.testing import assert_close

from conftest import run_cli
from vaelab import maths
from vaelab.cli import main
from vaelab.config import EvalConfig, ModelConfig
from vaelab.data import ImageData, binarize_once
from vaelab.evaluation.estimates import active_units, is_binary, log_likelihood, log_likelihood_batch, log_weights
from vaelab.evaluation.report import evaluate
from vaelab.models import VAE

LOG_2PI = math.log(2 * math.pi)


def _grid(n: int, half_width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and log trapezoid weights on [-w, w]."""
    zs = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    w = torch.full_like(zs, float(zs[1] - zs[0]))
    w[0] = w[-1] = w[0] / 2
    return zs, w.log()


@torch.no_grad()
def exact_log_px(model: VAE, x: torch.Tensor, n: int = 4001, half_width: float = 9.0) -> torch.Tensor:
    """log integral p(x|z) N(z; 0, I) dz for D = 1 or 2 by the trapezoid rule. x: (B, C, H, W). Returns (B,)."""
    zs, logw = _grid(n, half_width)
    if model.cfg.latent_dim == 1:
        z, lw = zs[:, None], logw
    else:
        z = torch.cartesian_prod(zs, zs)  # (n*n, 2)
        lw = (logw[:, None] + logw[None, :]).flatten()
    out = []
    for zc, lwc in zip(z.split(20_000), lw.split(20_000)):
        log_px_z = model.log_px_z(x, model.decode_params(zc[:, None, :].expand(-1, len(x), -1)))  # (Z, B)
        out.append(log_px_z + maths.std_normal_log_prob(zc)[:, None] + lwc[:, None])
    return torch.logsumexp(torch.cat(out), 0)


@torch.no_grad()
def exact_elbo_1d(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log p(x|z)] - KL for a 1-D latent, the expectation by quadrature. Returns (B,)."""
    loc, logvar = model.encode(x)  # (B, 1)
    u, logw = _grid(4001, 9.0)  # standard-normal coordinates
    z = loc[None] + torch.exp(0.5 * logvar)[None] * u[:, None, None]  # (U, B, 1)
    log_px_z = model.log_px_z(x, model.decode_params(z))  # (U, B)
    density = torch.exp(logw - 0.5 * (LOG_2PI + u**2))[:, None]
    return (density * log_px_z).sum(0) - maths.gaussian_kl(loc, logvar)


def _fit_a_little(model: VAE, x: torch.Tensor, steps: int = 300, seed: int = 0) -> VAE:
    """A few hundred ELBO steps so that q(z|x) is a reasonable (not exact) proposal."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (-model.elbo(x, generator=g).elbo.mean()).backward()
        opt.step()
    return model.eval()


def _model(latent_dim: int, likelihood: str = "bernoulli", hw: int = 4, seed: int = 0, **kw) -> VAE:
    torch.manual_seed(seed)
    return VAE(
        ModelConfig(input_shape=(1, hw, hw), hidden=(16,), latent_dim=latent_dim, likelihood=likelihood, **kw)
    ).double()


def _mismatched_model() -> VAE:
    """An untrained 1-D model whose decoder depends strongly on z and whose q(z|x) is narrow and
    off-centre: the ELBO is far below log p(x), so the K-dependence of the bound is large."""
    model = _model(1)
    with torch.no_grad():
        model.decoder.body[0].weight.mul_(8.0)
        model.decoder.out.weight.mul_(3.0)
        model.encoder.head.bias[0] = 1.0  # loc
        model.encoder.head.bias[1] = -2.0  # logvar
    return model.eval()


def _binary_images(n: int, hw: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    proto = (torch.rand(2, 1, hw, hw, generator=g) < 0.5).double()  # two prototypes plus flipped pixels
    flips = (torch.rand(n, 1, hw, hw, generator=g) < 0.1).double()
    return (proto[torch.arange(n) % 2] - flips).abs()


def _is_stderr(lw: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean_k w_k from the (K, B) log-weights: sd(w) / (sqrt(K) mean(w))."""
    w = torch.exp(lw - lw.max(0).values)
    return w.std(0) / (w.mean(0) * math.sqrt(lw.shape[0]))


def test_quadrature_reference_is_converged():
    model = _model(1)
    x = _binary_images(4)
    # ReLU kinks make the trapezoid rule O(h^2) rather than spectral: ~1e-7 nats, far below the
    # estimator's standard errors (~1e-2) that the tests below compare against
    assert_close(exact_log_px(model, x, n=4001), exact_log_px(model, x, n=8001, half_width=12.0), atol=1e-6, rtol=0)
    model2 = _model(2)
    assert_close(exact_log_px(model2, x, n=301), exact_log_px(model2, x, n=401, half_width=10.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_estimate_converges_to_the_exact_marginal_within_its_standard_error(latent_dim):
    x = _binary_images(8)
    model = _fit_a_little(_model(latent_dim), x)
    exact = exact_log_px(model, x, n=4001 if latent_dim == 1 else 301)
    g = torch.Generator().manual_seed(1)
    lw = log_weights(model, x, 5000, g)  # (K, B)
    est = maths.iwae_bound(lw)
    se = _is_stderr(lw)
    # per image: within 4 standard errors (the O(se^2) bias of the log is far smaller)
    assert ((est - exact).abs() < 4 * se + 1e-6).all(), (est - exact, se)
    assert float(se.max()) < 0.05  # and those standard errors are small: the test has teeth
    # the public function, with chunks, lands on the same value within the same error
    est2 = log_likelihood_batch(model, x, k=5000, chunk=700, generator=g)
    assert ((est2 - exact).abs() < 4 * se + 1e-6).all()
    # with few samples it is further off: convergence, not luck
    few = log_likelihood_batch(model, x, k=2, generator=g)
    assert float((exact - few).mean()) > float((exact - est2).abs().mean())


def test_continuous_density_estimate_converges_to_its_exact_marginal():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 3, 3, generator=g, dtype=torch.float64) * 0.5 + 0.25  # grey pixels
    model = _fit_a_little(_model(1, "gaussian-fixed", hw=3, fixed_scale=0.3), x)
    exact = exact_log_px(model, x)
    lw = log_weights(model, x, 5000, g)
    se = _is_stderr(lw)
    assert ((maths.iwae_bound(lw) - exact).abs() < 4 * se + 1e-6).all()


def test_k1_bound_equals_the_elbo_in_expectation():
    model = _mismatched_model()
    x = _binary_images(4)
    exact_elbo = exact_elbo_1d(model, x)
    reps = 20_000
    g = torch.Generator().manual_seed(2)
    l1 = log_likelihood_batch(model, x.repeat(reps, 1, 1, 1), k=1, generator=g).view(reps, -1)  # (R, B)
    mean, se = l1.mean(0), l1.std(0) / math.sqrt(reps)
    assert ((mean - exact_elbo).abs() < 4 * se).all(), (mean - exact_elbo, se)
    # ... and that expectation is strictly below log p(x): the test can tell the two apart
    assert ((exact_log_px(model, x) - exact_elbo) > 20 * se).all()


def test_bound_rises_with_k_on_average_towards_log_px():
    model = _mismatched_model()
    x = _binary_images(4)
    exact = exact_log_px(model, x)
    reps = 400
    g = torch.Generator().manual_seed(3)
    means, ses = [], []
    for k in (1, 4, 16, 64, 256):
        lk = log_likelihood_batch(model, x.repeat(reps, 1, 1, 1), k=k, chunk=64, generator=g).view(reps, -1).mean(1)
        means.append(float(lk.mean()))
        ses.append(float(lk.std() / math.sqrt(reps)))
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b - a > 3 * math.hypot(sa, sb), (means, ses)
    assert means[-1] < float(exact.mean()) + 3 * ses[-1]  # a lower bound in expectation
    assert float(exact.mean()) - means[-1] < 0.2 * (float(exact.mean()) - means[0])


def test_memory_is_bounded_by_chunk_times_batch(monkeypatch):
    model = _model(2)
    x = _binary_images(5)
    seen = []
    forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda z, y=None: seen.append(z.shape[:-1].numel()) or forward(z, y))
    encodes = []
    encoder = model.encoder.features
    monkeypatch.setattr(model.encoder, "features", lambda x, y=None: encodes.append(len(x)) or encoder(x, y))
    log_likelihood_batch(model, x, k=1000, chunk=64)
    assert max(seen) == 64 * 5 and sum(seen) == 1000 * 5
    # each chunk asks the model for its draws, encoder included: 16 encoder passes of 5 images
    # against 1000 * 5 decoded latents, so the encoder costs 1/64 of the decoder here
    assert encodes == [5] * 16


def test_log_likelihood_reports_mean_nll_and_its_standard_error():
    model = _model(2).float()
    data = ImageData((_binary_images(30) * 255).to(torch.uint8))
    est = log_likelihood(model, data, EvalConfig(k=200, batch_size=7, chunk=50, seed=4))
    assert est.num_images == 30 and est.num_samples == 200 and est.per_image.shape == (30,)
    assert est.nll == pytest.approx(-float(est.per_image.mean()))
    assert est.nll_stderr == pytest.approx(float(est.per_image.std() / math.sqrt(30)))
    assert est.nll > 0  # probabilities of binary images are <= 1
    again = log_likelihood(model, data, EvalConfig(k=200, batch_size=7, chunk=50, seed=4))
    assert torch.equal(est.per_image, again.per_image)  # seeded


# -- evaluate(): what is reported, and when an NLL is withheld -----------------------------------


def _tiny(likelihood: str) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, likelihood=likelihood)).eval()


@pytest.fixture
def grey(tiny_splits) -> ImageData:
    return tiny_splits.test


@pytest.fixture
def binary(tiny_splits) -> ImageData:
    return ImageData(binarize_once(tiny_splits.test.images, 0), tiny_splits.test.labels)


def test_report_for_bernoulli_on_binary_pixels(binary):
    model = _tiny("bernoulli")
    rep = evaluate(model, binary, EvalConfig(k=100, chunk=50), pixels="dynamic")
    assert rep.is_density and rep.binary_pixels and rep.note == ""
    assert rep.nll is not None and rep.nll > 0 and rep.nll_stderr > 0
    assert rep.bpd == pytest.approx(rep.nll / (64 * math.log(2)))
    assert rep.elbo == pytest.approx(rep.log_px_z - rep.kl)
    assert rep.elbo < -rep.nll + 3 * rep.elbo_stderr  # the ELBO is the looser bound
    assert rep.k == 100 and rep.num_images == 100 and rep.pixels == "dynamic"
    doc = rep.to_dict()
    assert {"nll", "nll_stderr", "elbo", "k", "pixels", "bpd", "active_units"} <= set(doc)
    json.dumps(doc)  # serialisable as it is


@pytest.mark.parametrize(
    "likelihood, data_kind",
    [("bernoulli", "grey"), ("continuous-bernoulli", "binary"), ("gaussian", "binary"), ("gaussian-fixed", "binary")],
)
def test_no_nll_when_the_likelihood_is_not_a_density_of_the_pixels(likelihood, data_kind, grey, binary):
    data = grey if data_kind == "grey" else binary
    rep = evaluate(_tiny(likelihood), data, EvalConfig(k=10), pixels="none")
    assert not rep.is_density and rep.nll is None and rep.nll_stderr is None and rep.bpd is None
    assert "not a density" in rep.note and math.isfinite(rep.elbo)


def test_pixels_are_checked_not_taken_from_the_label(grey):
    # a run that says "dynamic" but is handed grey pixels (e.g. the training split) gets no NLL
    rep = evaluate(_tiny("bernoulli"), grey, EvalConfig(k=10), pixels="dynamic")
    assert rep.nll is None and not rep.binary_pixels
    assert is_binary(ImageData(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)))
    assert not is_binary(ImageData(torch.tensor([0, 254], dtype=torch.uint8).view(2, 1, 1, 1)))


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "gaussian"])
def test_continuous_density_on_grey_pixels_gets_an_nll_but_no_bpd(likelihood, grey):
    rep = evaluate(_tiny(likelihood), grey, EvalConfig(k=20), pixels="none")
    assert rep.is_density and rep.nll is not None and math.isfinite(rep.nll)
    assert rep.bpd is None and "dequantisation" in rep.note


@pytest.mark.parametrize(
    "prior, posterior, sampled",
    [("normal", "gaussian", False), ("mog", "gaussian", True), ("vamp", "gaussian", True), ("normal", "iaf", True)],
)
def test_kl_says_when_it_is_a_one_draw_estimate(prior, posterior, sampled, binary):
    """Issue #23 item 20: without a closed form (VampPrior, mixture prior, a flow) the KL is the
    one-draw log q(z|x) - log p(z), and the report says so."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, prior=prior, posterior=posterior, prior_components=3
    )
    model = VAE(cfg).eval()
    rep = evaluate(model, binary, EvalConfig(k=4, seed=2), pixels="dynamic")
    assert rep.kl_sampled is sampled and rep.to_dict()["kl_sampled"] is sampled
    g = torch.Generator().manual_seed(2)
    x = binary.images.float() / 255
    with torch.no_grad():
        d = model(x, None, torch.randn((1, len(x), model.noise_dim), generator=g))
        one_draw = (d.log_qz_x - d.log_pz)[0].double().mean()  # log p(z) is computed when first read
    if sampled:
        assert d.kl is None and rep.kl == pytest.approx(float(one_draw), rel=1e-5)
    else:
        assert rep.kl == pytest.approx(float(d.kl.double().mean()), rel=1e-5)


def _write_run(root, model_cfg: ModelConfig, images):
    """A run folder with a freshly initialised model of `model_cfg` and an .npz of `images`."""
    import numpy as np

    from vaelab.config import RunConfig
    from vaelab.config_io import replace
    from vaelab.run import checkpoint as ckpt

    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "d.npz", x=images)
    cfg = replace(RunConfig(model=model_cfg), {"data.dataset": str(root / "d.npz"), "data.binarize": "none"})
    run = root / "run"
    run.mkdir()
    ckpt.write_config(run, cfg)
    torch.manual_seed(0)
    ckpt.save_weights(run / ckpt.MODEL, VAE(model_cfg))
    return run


def test_eval_table_labels_a_sampled_kl(tmp_path, capsys):
    import numpy as np

    images = (np.random.default_rng(0).random((60, 1, 8, 8)) < 0.5).astype(np.uint8) * 255
    for prior, label in (("mog", "  KL (sampled)  "), ("normal", "  KL  ")):
        cfg = ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, prior=prior)
        run = _write_run(tmp_path / prior, cfg, images)
        code, out, _ = _run(["eval", str(run), "--k", "4", "--threads", "1"], capsys)
        assert code == 0
        kl_line = next(line for line in out.splitlines() if line.lstrip().startswith("KL"))
        assert kl_line.startswith(label), kl_line
        assert ("no closed form" in out) is (prior == "mog")


def test_active_units_follow_burdas_criterion(binary):
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=4)).eval()
    head = model.encoder.head  # rows 0..D-1 give loc
    with torch.no_grad():
        head.weight[2:4].zero_()  # loc_2, loc_3 constant over x: inactive
        head.weight[0] *= 50  # loc_0, loc_1 vary a lot over x: active
        head.weight[1] *= 50
    assert active_units(model, binary) == 2
    with torch.no_grad():
        head.weight[3].normal_(0, 1e-4)  # varies, but with variance far below 0.01
    assert active_units(model, binary) == 2
    assert active_units(model, binary, threshold=0.0) == 3


# -- the `vaelab eval` command ---------------------------------------------------------------

_run = run_cli  # tests/conftest.py


@pytest.fixture
def binarized_run(tmp_path_factory, npz_dataset):
    run_dir = tmp_path_factory.mktemp("runs") / "bin"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--dataset",
                str(npz_dataset),
                "--binarize",
                "dynamic",
                "--epochs",
                "2",
                "--batch-size",
                "40",
                "--out",
                str(run_dir),
                "--quiet",
                "--threads",
                "1",
                "--no-plots",
            ]
        )
        raise SystemExit(0)
    assert e.value.code == 0
    return run_dir


def test_eval_command_writes_eval_json_and_per_image_values(binarized_run, tmp_path, capsys):
    import numpy as np

    per_image = tmp_path / "lp.npy"
    code, out, _ = _run(
        ["eval", str(binarized_run), "--k", "64", "--chunk", "16", "--threads", "1", "--per-image", str(per_image)],
        capsys,
    )
    assert code == 0
    doc = json.loads((binarized_run / "eval.json").read_text())
    assert doc["k"] == 64 and doc["pixels"] == "dynamic" and doc["is_density"] and doc["binary_pixels"]
    assert doc["nll"] > 0 and doc["nll_stderr"] > 0 and doc["elbo"] < 0 and doc["num_images"] == 60
    lp = np.load(per_image)
    assert lp.shape == (60,) and lp.mean() == pytest.approx(-doc["nll"])
    assert "NLL (k=64)" in out and f"{doc['nll']:.2f} +- {doc['nll_stderr']:.2f} nats" in out
    assert "bits/dim" in out and "active units" in out


def test_eval_json_keeps_one_record_per_split_k_images_and_weights(binarized_run, capsys):
    """Issue #23 item 5: an eval no longer silently replaces another made differently."""
    path = binarized_run / "eval.json"

    def ev(*args):
        code, out, err = _run(["eval", str(binarized_run), "--threads", "1", *args], capsys)
        assert code == 0, err
        return out.strip().splitlines()[-1], json.loads(path.read_text())

    line, doc = ev("--k", "8", "--limit", "20")
    assert line == f"saved in {path}" and [r["k"] for r in doc["evaluations"]] == [8]
    line, doc = ev("--k", "16", "--limit", "20")
    assert line == f"saved in {path}; 1 other evaluation kept there (vaelab compare)"
    assert doc["k"] == 16 and [(r["k"], r["num_images"]) for r in doc["evaluations"]] == [(8, 20), (16, 20)]
    first = doc["evaluations"][0]
    line, doc = ev("--k", "8", "--limit", "20", "--seed", "3")  # the same four: replaces k=8's record
    assert line == (
        f"saved in {path} (replacing the earlier evaluation of this split, k, number of images and weights); "
        f"1 other evaluation kept there (vaelab compare)"
    )
    assert [(r["k"], r["num_images"]) for r in doc["evaluations"]] == [(16, 20), (8, 20)]
    assert doc["evaluations"][-1]["nll"] != first["nll"] and doc["nll"] == doc["evaluations"][-1]["nll"]
    _, doc = ev("--k", "8", "--limit", "30")
    _, doc = ev("--k", "8", "--limit", "30", "--weights", "best")
    _, doc = ev("--k", "8", "--limit", "30", "--split", "val")
    keys = [(r["split"], r["k"], r["num_images"], r["weights"]) for r in doc["evaluations"]]
    assert len(keys) == len(set(keys)) == 5
    top = {k: v for k, v in doc.items() if k != "evaluations"}
    assert top == doc["evaluations"][-1]  # the top level is the latest evaluation


def test_an_eval_json_from_before_the_records_is_kept_as_one(binarized_run, capsys):
    old = {
        "nll": 90.0,
        "nll_stderr": 1.0,
        "k": 5000,
        "split": "test",
        "num_images": 10000,
        "weights": "model.safetensors",
    }
    (binarized_run / "eval.json").write_text(json.dumps(old))
    code, _, _ = _run(["eval", str(binarized_run), "--k", "8", "--threads", "1"], capsys)
    doc = json.loads((binarized_run / "eval.json").read_text())
    assert code == 0 and doc["evaluations"][0] == old and doc["evaluations"][1]["k"] == 8


def test_eval_command_rejects_bad_numbers(binarized_run, capsys):
    for args, msg in (
        (["--k", "0"], "k must be a positive integer"),
        (["--chunk", "-1"], "chunk"),
        (["--memory-mb", "0"], "memory_mb must be a positive integer, got 0"),
        (["--limit", "0"], "--limit"),
    ):
        code, _, err = _run(["eval", str(binarized_run), *args], capsys)
        assert code == 2 and msg in err and err.count("\n") == 1, err


def test_dataclass_fields_are_documented_in_the_docs():
    """docs/evaluation.md explains every eval.json key (the file is the reference for these numbers)."""
    from pathlib import Path

    from vaelab.evaluation.report import EvalReport

    doc = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    missing = [f.name for f in dataclasses.fields(EvalReport) if f"`{f.name}`" not in doc]
    assert not missing, missing


def test_log_likelihood_refuses_a_score_that_is_not_a_density() -> None:
    """The library is as honest as `vaelab eval`: a Bernoulli on grey pixels has no NLL."""
    from vaelab import NotADensity

    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    grey = ImageData(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), None)
    with pytest.raises(NotADensity, match="bernoulli likelihood on grey pixels is not a density.*--binarize dynamic"):
        log_likelihood(model, grey, EvalConfig(k=5))
    binary = ImageData(grey.images // 128 * 255, None)
    assert log_likelihood(model, binary, EvalConfig(k=5)).nll > 0
    gauss = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2, likelihood="gaussian"))
    with pytest.raises(NotADensity, match="gaussian likelihood on binary pixels"):
        log_likelihood(gauss, binary, EvalConfig(k=5))


def test_one_evaluation_checks_the_pixels_once_and_a_command_reads_config_json_once(monkeypatch, tmp_path, capsys):
    """#22: is_binary ran over the whole split twice per eval, and config.json was read twice."""
    from conftest import run_cli, train_tiny_run
    from vaelab.evaluation import estimates, report
    from vaelab.run import checkpoint

    run = train_tiny_run(tmp_path, n=200, epochs=1)
    calls = {"is_binary": 0, "read_config": 0}
    real_binary, real_config = estimates.is_binary, checkpoint.read_config

    def counting_binary(*a, **k):
        calls["is_binary"] += 1
        return real_binary(*a, **k)

    def counting_config(*a, **k):
        calls["read_config"] += 1
        return real_config(*a, **k)

    for module in (estimates, report):  # where it is defined, and where evaluate() calls it
        monkeypatch.setattr(module, "is_binary", counting_binary)
    monkeypatch.setattr(checkpoint, "read_config", counting_config)
    code, _, err = run_cli(["eval", str(run), "--k", "5", "--threads", "1"], capsys)
    assert code == 0, err
    assert calls == {"is_binary": 1, "read_config": 1}


# -- #22: `vaelab eval` as one library call; one loop that encodes a split -------------------------


def test_evaluate_run_is_the_eval_command_as_one_call(binarized_run, tmp_path, capsys):
    import numpy as np

    import vaelab

    per_image = tmp_path / "lp.npy"
    result = vaelab.evaluate_run(binarized_run, EvalConfig(k=16, chunk=4), limit=30, per_image=per_image)
    doc = json.loads((binarized_run / "eval.json").read_text())
    assert result.record == {k: v for k, v in doc.items() if k != "evaluations"}
    assert result.report.k == 16 and result.report.num_images == 30 and result.dataset == doc["dataset"]
    assert np.load(per_image).mean() == pytest.approx(-result.report.nll)
    assert result.path == binarized_run / "eval.json" and not result.replaced and result.kept == 0
    code, out, _ = _run(["eval", str(binarized_run), "--k", "16", "--chunk", "4", "--limit", "30"], capsys)
    assert code == 0 and out.splitlines()[: len(result.table()) - 1] == result.table()[:-1]  # all but the time
    shown = out.splitlines()[0]
    assert shown == f"dataset / split  {doc['dataset']} / test (30 images, pixels: dynamic)"
    again = json.loads((binarized_run / "eval.json").read_text())
    assert again["nll"] == result.report.nll and len(again["evaluations"]) == 1  # the same four: replaced
    with pytest.raises(vaelab.ConfigError, match="--limit must be a positive integer, got 0"):
        vaelab.evaluate_run(binarized_run, limit=0)


def test_encode_means_is_the_posterior_mean_of_each_image_with_its_label():
    from vaelab.evaluation.estimates import encode_means, encode_posteriors, labels_for

    torch.manual_seed(0)
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3, num_classes=3)).eval()
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (25, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(25) % 3)
    x, y = data.images.float() / 255, data.labels
    with torch.no_grad():
        want = model.encode_mean(x, y).numpy()
        logvar = model.encode(x, y)[1].numpy()
    z = encode_means(model, data, batch_size=7)
    assert z.shape == (25, 3) and z.dtype == want.dtype
    assert_close(torch.from_numpy(z), torch.from_numpy(want), rtol=1e-6, atol=1e-6)
    assert_close(torch.from_numpy(encode_means(model, data, limit=10, batch_size=4)), torch.from_numpy(want[:10]))
    means, logvars = encode_posteriors(model, data)
    assert_close(torch.from_numpy(means), torch.from_numpy(want))
    assert_close(torch.from_numpy(logvars), torch.from_numpy(logvar))
    assert labels_for(model, y) is not None and labels_for(model, None) is None
    plain = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    assert labels_for(plain, y) is None  # an unconditional model takes no labels
