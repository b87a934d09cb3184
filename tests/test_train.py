"""fit(): it learns, it writes a run folder, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import crash_fit_at_step
from vaelab.config import TrainConfig
from vaelab.models import VAE
from vaelab.run import checkpoint as ckpt
from vaelab.training import fit, kl_weight, lr_at


def _fit(cfg, splits, run_dir=None, resume=False):
    torch.manual_seed(cfg.train.seed)
    return fit(VAE(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


def test_training_improves_the_elbo_and_writes_the_run(tiny_cfg, tiny_splits, tmp_path):
    # without the output-bias init, so that the first epoch starts from grey pixels
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=4, init_output_bias=False))
    res = _fit(cfg, tiny_splits, tmp_path)
    elbos = [r["val_elbo"] for r in res.metrics]
    assert elbos[-1] > elbos[0] + 1.0
    assert res.epochs == 4 and res.steps == 4 * 10 and res.stopped == "completed"
    for name in (ckpt.CONFIG, ckpt.MODEL, ckpt.BEST, ckpt.CHECKPOINT, ckpt.METRICS):
        assert (tmp_path / name).is_file(), name
    rows = ckpt.read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert res.test is not None and res.test.n == 100
    assert res.test.elbo == pytest.approx(res.test.log_px_z - res.test.kl, abs=1e-3)
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_weights(tiny_cfg, tiny_splits):
    a = _fit(tiny_cfg, tiny_splits).model.state_dict()
    b = _fit(tiny_cfg, tiny_splits).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_equals_uninterrupted(tiny_cfg, tiny_splits, tmp_path, binarize):
    cfg = dataclasses.replace(
        tiny_cfg,
        data=dataclasses.replace(tiny_cfg.data, binarize=binarize),
        train=dataclasses.replace(tiny_cfg.train, epochs=3),
    )
    full = _fit(cfg, tiny_splits, tmp_path / "full")
    # stop after 1 epoch, then continue the same run to 3 epochs
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    _fit(short, tiny_splits, tmp_path / "resumed")
    resumed = _fit(cfg, tiny_splits, tmp_path / "resumed", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "samples_per_s")} for r in rows]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)


def test_resume_mid_epoch_equals_uninterrupted(tiny_cfg, tiny_splits, tmp_path, monkeypatch):
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=2, checkpoint_every=3))
    full = _fit(cfg, tiny_splits, tmp_path / "full")
    # crash at step 5 of epoch 1 (10 steps per epoch): the last checkpoint is the one of step 3
    crash_fit_at_step(monkeypatch, 5, lambda: _fit(cfg, tiny_splits, tmp_path / "crashed"))
    _, _, state = ckpt.load_checkpoint(
        tmp_path / "crashed", VAE(cfg.model), torch.optim.Adam(VAE(cfg.model).parameters())
    )
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)
    torch.manual_seed(123)  # resuming must not depend on the global RNG
    resumed = _fit(cfg, tiny_splits, tmp_path / "crashed", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "samples_per_s")} for r in rows]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)


def test_schedules_and_warmup():
    tc = TrainConfig(lr=1e-3, schedule="burda", epochs=20)
    # stage i lasts 3^i epochs: epochs 0 | 1-3 | 4-12 | 13-39
    assert [round(lr_at(tc, e) / 1e-3, 6) for e in (0, 1, 3, 4, 12, 13)] == [
        1.0,
        round(10 ** (-1 / 7), 6),
        round(10 ** (-1 / 7), 6),
        round(10 ** (-2 / 7), 6),
        round(10 ** (-2 / 7), 6),
        round(10 ** (-3 / 7), 6),
    ]
    cos = TrainConfig(lr=1.0, schedule="cosine", epochs=4)
    assert [lr_at(cos, e) for e in range(4)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    wu = TrainConfig(warmup_epochs=2, beta=1.0)
    assert [kl_weight(wu, s, 10) for s in (0, 5, 10, 20, 30)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_early_stopping_and_time_budget(tiny_cfg, tiny_splits):
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=50, patience=1, lr=1e-12))
    res = _fit(cfg, tiny_splits)
    assert res.stopped == "early-stopping" and res.epochs < 50
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=50, max_minutes=1e-9))
    res = _fit(cfg, tiny_splits)
    assert res.stopped == "time-budget" and res.epochs == 1 and res.steps == 1


def test_iwae_objective_and_conditional_train(tiny_cfg, tiny_splits):
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, objective="iwae", k=5, epochs=1))
    res = _fit(cfg, tiny_splits)
    row = res.metrics[0]
    assert row["train_objective"] >= row["train_elbo"] - 1.0  # the IWAE bound is the tighter one
    cond = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, num_classes=4))
    res = _fit(cond, tiny_splits)
    assert res.model.cfg.num_classes == 4 and len(res.metrics) == cond.train.epochs
    # a conditional model trains: its test ELBO is a finite bound over every test image, better than at step 0
    assert res.test is not None and res.test.n == len(tiny_splits.test) and math.isfinite(res.test.elbo)
    assert res.metrics[-1]["train_elbo"] > res.metrics[0]["train_elbo"]


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tiny_cfg, tiny_splits, tmp_path):
    from vaelab.errors import TrainingDiverged

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=3, lr=1e30))
    with pytest.raises(TrainingDiverged, match=r"NaN/inf at step \d+ .*smaller --lr"):
        _fit(cfg, tiny_splits, tmp_path)
    # lr 1e30 diverges within the first epoch, before any checkpoint: nothing non-finite was written
    assert not (tmp_path / ckpt.CHECKPOINT).exists() and not (tmp_path / ckpt.MODEL).exists()


def test_nan_loss_after_a_checkpoint_keeps_the_last_good_one(tiny_cfg, tiny_splits, tmp_path, monkeypatch):
    """Divergence in epoch 2: the epoch-1 checkpoint and weights stay, all finite."""
    from vaelab.errors import TrainingDiverged
    from vaelab.training import loop as train_module

    real = train_module.kl_weight

    def nan_in_epoch_two(cfg, step, steps_per_epoch):
        return math.nan if step >= steps_per_epoch else real(cfg, step, steps_per_epoch)

    monkeypatch.setattr(train_module, "kl_weight", nan_in_epoch_two)
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=3))
    with pytest.raises(TrainingDiverged, match=r"NaN/inf at step \d+"):
        _fit(cfg, tiny_splits, tmp_path)
    assert ckpt.read_state(tmp_path)["epoch"] == 1
    weights = ckpt.load(tmp_path).state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_adam_normgrad_is_the_vampprior_codes_optimizer(tiny_cfg):
    """train.optimizer adam-normgrad against AdamNormGrad as jmtomczak/vae_vampprior writes it
    (utils/optimizer.py: grad / (||grad||_2 + 1e-7) per tensor, then Adam with bias correction), spelled
    out by hand here over three steps of a loss whose gradients differ in scale from tensor to tensor."""
    import copy

    from vaelab.objectives import OBJECTIVES
    from vaelab.objectives.base import Outcome
    from vaelab.training.batches import Batch
    from vaelab.training.step import make_optimizer, update

    torch.manual_seed(0)
    start = VAE(tiny_cfg.model)
    scales = {name: 10.0 ** (i % 5 - 2) for i, (name, _) in enumerate(start.named_parameters())}

    targets = (0.3, -2.0, 5.0)  # a loss that moves, so that the gradients' norms change from step to step

    def loss_of(model, t):  # (1,) surrogate: each tensor's gradient has its own scale
        return -sum(scales[n] * ((p - targets[t]) ** 2).sum() for n, p in model.named_parameters()).reshape(1)

    def trained(optimizer: str):
        model = copy.deepcopy(start)
        tc = dataclasses.replace(tiny_cfg.train, optimizer=optimizer, lr=0.01, adam_eps=1e-8)
        opt = make_optimizer(model, tc, torch.device("cpu"))
        batch = Batch(torch.zeros(1), None, torch.zeros(1), None, 1)
        for t in range(3):
            s = loss_of(model, t)
            assert update(
                model, opt, None, OBJECTIVES["elbo"], Outcome(s, s, s, s, s), tc, 1, batch, torch.device("cpu")
            )
        return dict(model.named_parameters())

    ref = {n: p.detach().clone() for n, p in start.named_parameters()}
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    for t in range(1, 4):
        for n, p in ref.items():
            g = 2 * scales[n] * (p - targets[t - 1])  # d/dp of the loss, -surrogate
            g = g / (torch.linalg.vector_norm(g) + 1e-7)
            m[n] = 0.9 * m[n] + 0.1 * g
            v[n] = 0.999 * v[n] + 0.001 * g * g
            p -= 0.01 * (m[n] / (1 - 0.9**t)) / ((v[n] / (1 - 0.999**t)).sqrt() + 1e-8)

    normgrad, plain = trained("adam-normgrad"), trained("adam")
    for n in ref:
        torch.testing.assert_close(normgrad[n].detach(), ref[n], rtol=1e-5, atol=1e-6)
    # and plain Adam takes other steps from the second on (the test can tell the two apart)
    assert max(float((plain[n].detach() - ref[n]).abs().max()) for n in ref) > 1e-3
