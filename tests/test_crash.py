"""Crash safety: SIGKILL at any moment (including inside a checkpoint write), SIGINT/SIGTERM, NaN
losses and a full disk all leave a run folder that `vaelab train --resume` continues bit-identically.

The kills use the documented test hook VAELAB_TEST_CRASH_BEFORE_RENAME=NAME:N (vaelab.platform.storage): the
N-th atomic write of the file NAME SIGKILLs its own process after the temporary file is written and
fsynced, just before the rename. The slow test also kills at random moments from outside.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaelab.training.loop
import vaelab.training.step
from vaelab.cli import main
from vaelab.data import CRASH_HOOK_ENV
from vaelab.errors import ConfigError, StorageError, TrainingDiverged
from vaelab.models import VAE
from vaelab.run import checkpoint as ckpt

# 480 training images / batch 40 = 12 steps per epoch, 3 epochs = 36 steps. Checkpoints at steps
# 5, 10, 12 (epoch), 15, 20, 24 (epoch), 25, 30, 35, 36 (epoch) and once more after the test ELBO.
STEPS = 36
TIMING = {"epoch_seconds", "samples_per_s"}  # wall-clock columns: the only ones allowed to differ


def train_args(dataset: Path, out: Path) -> list[str]:
    return [
        "train",
        "--preset",
        "tiny",
        "--dataset",
        str(dataset),
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "40",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--checkpoint-every",
        "5",
        "--out",
        str(out),
        "--no-plots",
        "-q",
    ]


def resume_args(out: Path) -> list[str]:
    return ["train", "--resume", str(out), "--no-plots", "-q"]


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Run `vaelab ARGS` in this process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    return e.value.code, capsys.readouterr().err


def subprocess_cli(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop(CRASH_HOOK_ENV, None)
    if crash_at:
        env[CRASH_HOOK_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "vaelab", *args], env=env, capture_output=True, text=True, timeout=300)


def checkpoint_contents(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    import json

    from safetensors import safe_open

    with safe_open(str(run / ckpt.CHECKPOINT), "pt") as f:
        meta = f.metadata()
    state = json.loads(meta["state"])
    return load_file(run / ckpt.CHECKPOINT), state


def assert_identical(run: Path, ref: Path) -> None:
    assert_identical_run(run, ref, STEPS)


def assert_identical_run(run: Path, ref: Path, steps: int) -> None:
    """Same weights (last and best), optimizer and RNG states, metrics and test ELBO, bit for bit."""
    from safetensors import safe_open

    for name in (ckpt.MODEL, ckpt.BEST):  # (not the bytes: safetensors orders its metadata at random)
        a, b = load_file(run / name), load_file(ref / name)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), name
        with safe_open(str(run / name), "pt") as fa, safe_open(str(ref / name), "pt") as fb:
            assert fa.metadata() == fb.metadata()  # including the SHA-256 of the tensors
    t_run, s_run = checkpoint_contents(run)
    t_ref, s_ref = checkpoint_contents(ref)
    assert sorted(t_run) == sorted(t_ref)
    for k in t_ref:
        assert torch.equal(t_run[k], t_ref[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(s_run["metrics"]) == strip(s_ref["metrics"])
    assert s_run["step"] == s_ref["step"] == steps
    assert s_run["test"] == s_ref["test"]
    assert {k: v for k, v in s_run.items() if k not in ("metrics", "elapsed")} == {
        k: v for k, v in s_ref.items() if k not in ("metrics", "elapsed")
    }
    assert not list(run.glob(".*.tmp")), "a stale temporary file was left behind"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from conftest import make_images

    x, y = make_images(600)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=x[:, 0], y=y)
    return path


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The uninterrupted run, trained once in this process."""
    out = tmp_path_factory.mktemp("ref") / "run"
    with pytest.raises(SystemExit) as e:
        main(train_args(dataset, out))
        raise SystemExit(0)
    assert e.value.code == 0
    return out


def test_sigkill_inside_a_checkpoint_write_then_resume_is_bit_identical(dataset, reference, tmp_path, capsys):
    out = tmp_path / "run"
    # The 3rd checkpoint write (the end of epoch 1, step 12) dies between fsync and rename.
    proc = subprocess_cli(train_args(dataset, out), crash_at=f"{ckpt.CHECKPOINT}:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stale = list(out.glob(f".{ckpt.CHECKPOINT}.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # the complete new file that was never renamed
    _, state = checkpoint_contents(out)  # the previous checkpoint is intact and readable
    assert state["step"] == 10 and state["epoch"] == 0 and state["step_in_epoch"] == 10

    code, err = cli(resume_args(out), capsys)
    assert code == 0, err
    assert_identical(out, reference)


def test_sigkill_before_the_first_checkpoint_restarts_from_step_0(dataset, reference, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    proc = subprocess_cli(train_args(dataset, out), crash_at=f"{ckpt.CHECKPOINT}:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / ckpt.CONFIG).is_file() and not (out / ckpt.CHECKPOINT).exists()
    code, err = cli(resume_args(out), capsys)
    assert code == 0, err
    assert "no checkpoint.safetensors yet, so the run starts again from step 0" in caplog.text
    assert_identical(out, reference)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_exits_128_plus_signum_and_resumes(
    signum, dataset, reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    real = vaelab.training.loop.kl_weight

    def kl_weight_then_signal(cfg, step, steps_per_epoch):  # the signal arrives during step 17
        if step == 17:
            os.kill(os.getpid(), signum)
        return real(cfg, step, steps_per_epoch)

    monkeypatch.setattr(vaelab.training.loop, "kl_weight", kl_weight_then_signal)
    handler_before = signal.getsignal(signum)
    code, err = cli(train_args(dataset, out), capsys)
    assert code == 128 + signum
    assert err.count("\n") == 1
    assert f"stopped by signal {signal.Signals(signum).name} at step 18" in err
    assert f"vaelab train --resume {out}" in err
    _, state = checkpoint_contents(out)
    assert state["step"] == 18 and state["step_in_epoch"] == 6  # the step in flight was finished and saved
    assert signal.getsignal(signum) is handler_before  # the handler is restored

    monkeypatch.setattr(vaelab.training.loop, "kl_weight", real)
    code, err = cli(resume_args(out), capsys)
    assert code == 0, err
    assert_identical(out, reference)


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resumes(
    dataset, reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    real_replace = os.replace
    writes = []

    def replace_until_full(src, dst):
        writes.append(Path(dst).name)
        if writes.count(ckpt.CHECKPOINT) == 4:  # the disk fills up at the 4th checkpoint (step 15)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_until_full)
    code, err = cli(train_args(dataset, out), capsys)
    assert code == 2
    assert (
        err == f"vaelab: error: cannot write {out / ckpt.CHECKPOINT} (No space left on device); nothing was "
        f"changed there: free disk space or choose a writable folder\n"
    )
    assert not list(out.glob(".*.tmp"))
    _, state = checkpoint_contents(out)
    assert state["step"] == 12 and state["epoch"] == 1

    monkeypatch.setattr(os, "replace", real_replace)  # space freed
    code, err = cli(resume_args(out), capsys)
    assert code == 0, err
    assert_identical(out, reference)


def test_library_raises_storage_error_an_oserror(tmp_path, monkeypatch):
    from vaelab.data import atomic_write_bytes

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match=r"cannot write .*f\.bin \(No space left on device\)") as e:
        atomic_write_bytes(target, b"new")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_writes_get_normal_permissions(tmp_path):
    from vaelab.data import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0o600


def test_nan_loss_names_the_step_and_the_cause_and_keeps_the_last_good_checkpoint(
    dataset, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    real = vaelab.training.step.training_objective

    calls = []

    def nan_at_step_23(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 24:  # the 24th step of the run, step 23 counting from 0
            out.surrogate = out.surrogate * float("nan")
        return out

    monkeypatch.setattr(vaelab.training.step, "training_objective", nan_at_step_23)
    code, err = cli(train_args(dataset, out), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "the loss became NaN/inf at step 23 (lr 0.001)" in err
    assert "pixels lie in [0, 1]" in err and "smaller --lr" in err
    tensors, state = checkpoint_contents(out)
    assert state["step"] == 20  # the last checkpoint before the NaN, not overwritten
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    model = vaelab.load(out)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert not list(out.glob(".*.tmp"))


def test_nan_weights_are_never_written_over_a_good_file(tmp_path):
    from vaelab.config import ModelConfig

    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    opt = torch.optim.Adam(model.parameters())
    ckpt.save_weights(tmp_path / ckpt.MODEL, model)
    ckpt.save_checkpoint(
        tmp_path, model, opt, {"noise": torch.Generator().get_state()}, {"sums": torch.zeros(4)}, {"step": 7}
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.decoder.out.bias[3] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 8: model.decoder.out.bias holds NaN/inf"):
        ckpt.save_checkpoint(
            tmp_path, model, opt, {"noise": torch.Generator().get_state()}, {"sums": torch.zeros(4)}, {"step": 8}
        )
    with pytest.raises(
        TrainingDiverged, match=r"decoder.out.bias holds NaN/inf, so .*model.safetensors was not written"
    ):
        ckpt.save_weights(tmp_path / ckpt.MODEL, model)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_huge_learning_rate_stops_training_without_writing_non_finite_tensors(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(dataset, out)
    args[args.index("--checkpoint-every") + 1] = "2"
    code, err = cli([*args, "--lr", "1e6"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("vaelab: error: training diverged at step 2:") and "smaller --lr" in err
    assert not (out / ckpt.CHECKPOINT).exists() and not (out / ckpt.MODEL).exists()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,n",
    [
        (ckpt.CONFIG, 1),
        (ckpt.CHECKPOINT, 1),
        (ckpt.MODEL, 1),
        (ckpt.CHECKPOINT, 2),
        (ckpt.METRICS, 1),
        (ckpt.BEST, 2),
        (ckpt.CHECKPOINT, 6),
        (ckpt.MODEL, 9),
        (ckpt.CHECKPOINT, 11),
    ],
)
def test_sigkill_inside_any_write_then_resume_is_bit_identical(name, n, dataset, reference, tmp_path, capsys):
    """Die inside the n-th write of `name`, just before its rename; resume; compare with the reference."""
    out = tmp_path / "run"
    proc = subprocess_cli(train_args(dataset, out), crash_at=f"{name}:{n}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if (out / ckpt.CONFIG).is_file():
        code, err = cli(resume_args(out), capsys)
    else:  # died before config.json existed: the folder holds no run yet, so the same command starts it
        code, err = cli(train_args(dataset, out), capsys)
    assert code == 0, err
    assert_identical(out, reference)


@pytest.mark.slow
def test_a_run_killed_again_during_each_resume_still_ends_bit_identical(dataset, reference, tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess_cli(train_args(dataset, out), crash_at=f"{ckpt.CHECKPOINT}:2")
    for crash_at in (f"{ckpt.MODEL}:2", f"{ckpt.CHECKPOINT}:3", f"{ckpt.BEST}:1", f"{ckpt.METRICS}:2"):
        assert proc.returncode == -signal.SIGKILL, (crash_at, proc.stderr)
        proc = subprocess_cli(resume_args(out), crash_at=crash_at)  # counts restart in each process
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    code, err = cli(resume_args(out), capsys)
    assert code == 0, err
    assert_identical(out, reference)


@pytest.mark.slow
def test_sigkill_at_random_moments_until_done_is_bit_identical(dataset, tmp_path, capsys):
    """SIGKILL from outside at seeded random delays (most land in the training loop), resume, repeat."""

    def args(out: Path) -> list[str]:  # 20 epochs (240 steps), so that the loop takes a while
        a = train_args(dataset, out)
        a[a.index("--epochs") + 1] = "20"
        a[a.index("--checkpoint-every") + 1] = "7"
        return a

    ref = tmp_path / "ref"
    code, err = cli(args(ref), capsys)
    assert code == 0, err
    rng = random.Random(0)
    out = tmp_path / "run"
    command = args(out)
    env = {k: v for k, v in os.environ.items() if k != CRASH_HOOK_ENV}
    kills = 0

    def checkpoint_id() -> tuple[int, int] | None:
        try:
            st = (out / ckpt.CHECKPOINT).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns  # a rename gives a new inode

    for _ in range(8):
        before = checkpoint_id()
        p = subprocess.Popen(
            [sys.executable, "-m", "vaelab", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 120
        while checkpoint_id() == before and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # wait until the loop is running: it has written a new checkpoint
        time.sleep(rng.uniform(0.0, 0.3))  # then kill at a random moment of the loop
        if p.poll() is not None:
            assert p.returncode == 0
            break
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        kills += 1
        command = resume_args(out)
    else:
        code, err = cli(resume_args(out), capsys)
        assert code == 0, err
    assert_identical_run(out, ref, steps=240)
    print(f"\nSIGKILLs at random moments of the loop: {kills}, each resumed; final run bit-identical")
    assert kills >= 1


def _fit(cfg, splits, run_dir, resume=False):
    torch.manual_seed(cfg.train.seed)
    return vaelab.fit(VAE(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


def test_a_run_stopped_by_its_time_budget_continues_when_resumed_with_more_time(tiny_cfg, tiny_splits, tmp_path):
    import dataclasses

    spent = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_minutes=1e-9))
    first = _fit(spent, tiny_splits, tmp_path)
    assert first.stopped == "time-budget" and first.steps == 1  # the budget is spent after one step
    more = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_minutes=None))
    again = _fit(more, tiny_splits, tmp_path, resume=True)
    assert again.stopped == "completed" and again.epochs == tiny_cfg.train.epochs
    # a finished run has nothing more to do: resuming it is reported, not redone
    with pytest.raises(
        ConfigError,
        match=r"already complete \(2 of 2 epochs\); to train further, pass --epochs N "
        r"with N above 2",
    ):
        _fit(spent, tiny_splits, tmp_path, resume=True)


def test_resuming_a_spent_time_budget_says_to_give_more_minutes(tiny_cfg, tiny_splits, tmp_path):
    import dataclasses

    spent = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_minutes=1e-9))
    _fit(spent, tiny_splits, tmp_path)
    with pytest.raises(
        ConfigError, match="already used its time budget of 1e-09 minutes .*give a larger --max-minutes"
    ):
        _fit(spent, tiny_splits, tmp_path, resume=True)


def test_resuming_a_gpu_checkpoint_on_a_cpu_names_the_device(tiny_cfg, tiny_splits, tmp_path):
    from vaelab.errors import CheckpointError

    _fit(tiny_cfg, tiny_splits, tmp_path)
    model = VAE(tiny_cfg.model)
    opt = torch.optim.Adam(model.parameters())
    rng, extra, state = ckpt.load_checkpoint(tmp_path, model, opt)
    rng["noise"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA (Philox) generator state
    ckpt.save_checkpoint(tmp_path, model, opt, rng, extra, state)
    with pytest.raises(
        CheckpointError,
        match="random-number state was saved on another device type than cpu; "
        "resume with the --device the run was trained on",
    ):
        _fit(tiny_cfg, tiny_splits, tmp_path, resume=True)


# -- the numbers do not depend on the machine's load (issue 14, item 1) ---------------------------
# Big enough that torch splits its kernels over threads (28x28 pixels, 256 hidden units): with 1
# and 2 threads this run ends with different weights, which the first test checks.
LOAD_STEPS = 3 * 13  # 640 training images of 800 / batch 50, 3 epochs


def load_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--preset",
        "seed",
        "--dataset",
        str(dataset),
        "--hidden",
        "256",
        "--epochs",
        "3",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-plots",
        "-q",
        *extra,
    ]


@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory) -> Path:
    from conftest import make_images

    x, y = make_images(800, hw=28, seed=1)
    path = tmp_path_factory.mktemp("data28") / "d.npz"
    np.savez(path, x=x[:, 0], y=y)
    return path


class BusyCore:
    """A process that keeps one core busy (a Python spin loop) while the block runs."""

    def __enter__(self) -> BusyCore:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let the scheduler see it
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def idle_reference(mnist_sized, tmp_path_factory) -> Path:
    """The run with the default thread count, uninterrupted, on a machine with nothing else to do."""
    from vaelab.platform.cpu import usable_cores

    if usable_cores() < 2:
        pytest.skip("one usable core: every thread default is 1, so the load cannot change the numbers here")
    out = tmp_path_factory.mktemp("idle") / "run"
    proc = subprocess_cli(load_args(mnist_sized, out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_thread_count_changes_the_numbers_so_config_json_records_it(mnist_sized, idle_reference, tmp_path):
    import json

    from vaelab.platform.cpu import usable_cores

    recorded = json.loads((idle_reference / ckpt.CONFIG).read_text())["train"]["threads"]
    assert recorded == usable_cores()  # the count it trained with, not null
    one = tmp_path / "one"
    proc = subprocess_cli(load_args(mnist_sized, one, "--threads", "1"))
    assert proc.returncode == 0, proc.stderr
    a, b = load_file(one / ckpt.MODEL), load_file(idle_reference / ckpt.MODEL)
    assert any(not torch.equal(a[k], b[k]) for k in a), "1 thread gave the same weights: the test below is void"


def test_the_same_command_gives_the_same_weights_with_a_core_busy(mnist_sized, idle_reference, tmp_path):
    out = tmp_path / "run"
    with BusyCore():
        proc = subprocess_cli(load_args(mnist_sized, out))
    assert proc.returncode == 0, proc.stderr
    assert_identical_run(out, idle_reference, LOAD_STEPS)


def test_sigkill_after_epoch_2_and_resume_with_a_core_busy_is_bit_identical(mnist_sized, idle_reference, tmp_path):
    out = tmp_path / "run"
    # the 3rd checkpoint write (the end of epoch 3) dies before its rename: epoch 2's checkpoint stays
    proc = subprocess_cli(load_args(mnist_sized, out), crash_at=f"{ckpt.CHECKPOINT}:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert checkpoint_contents(out)[1]["epoch"] == 2
    with BusyCore():
        proc = subprocess_cli(["train", "--resume", str(out), "--no-plots", "-q"])
    assert proc.returncode == 0, proc.stderr
    assert_identical_run(out, idle_reference, LOAD_STEPS)
