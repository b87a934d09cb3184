"""DistributedDataParallel on CPU (gloo, 127.0.0.1): N processes compute what one process computes.

Every test that starts processes gives them free ports on 127.0.0.1, a wall-clock timeout and a
small collective timeout (VAELAB_DIST_TIMEOUT), and kills what is left of them at the end.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaelab.cli import main
from vaelab.errors import ConfigError, DistributedError
from vaelab.platform.distributed import _first_line, _is_peer_failure, dist_timeout

# 480 training images (the .npz fixture's 80%): batch 50 leaves a last batch of 30, which 2
# processes split 15/15; a conditional model with dynamic binarization uses every per-rank slice.
ARGS = [
    "--hidden",
    "16",
    "--latent-dim",
    "2",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--binarize",
    "dynamic",
    "--conditional",
    "--no-plots",
    "-q",
]
TIMEOUT_S = 120  # wall clock of one launch; a hang fails the test instead of blocking the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update({"OMP_NUM_THREADS": "1", "VAELAB_DIST_TIMEOUT": "30", "PYTHONUNBUFFERED": "1", **extra})
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # a session of its own, so that a timeout can kill torchrun and its workers together
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT_S) -> list[int]:
    """Exit codes of `procs`; a process still running after `timeout` s is killed and fails the test."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        kill(procs)
    return codes


def kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "vaelab", "train"]


def one_process(data: Path, out: Path, *extra: str) -> None:
    main(["train", "--dataset", str(data), *ARGS, "--out", str(out), *extra])


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:  # float summation order differs (gradients are all-reduced): ~1e-8 in practice
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    ra, rb = (list(csv.DictReader(open(p / "metrics.csv"))) for p in (a, b))
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("train_elbo", "train_kl", "val_elbo", "val_kl"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-5, abs=1e-6), key


def test_two_processes_match_one_process(npz_dataset, tmp_path):
    """torchrun with 2 processes on 127.0.0.1 ends with the weights and metrics of 1 process."""
    one_process(npz_dataset, tmp_path / "one", "--epochs", "2")
    log = tmp_path / "two.log"
    cmd = torchrun(
        "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0"
    )  # port 0: torchrun picks a free one
    proc = start(
        [*cmd, "--dataset", str(npz_dataset), *ARGS, "--epochs", "2", "--out", str(tmp_path / "two")], clean_env(), log
    )
    assert finish([proc]) == [0], log.read_text()[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert log.read_text().count("test ELBO") == 1  # only rank 0 reports (and writes)


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_dead_or_silent_rank_stops_the_others_with_a_clear_error(npz_dataset, tmp_path, how):
    """Rank 1 is killed (SIGKILL) or frozen (SIGSTOP) after the first epoch: rank 0 exits with
    code 2 and a one-line DistributedError, on the broken connection or after the collective
    timeout, instead of waiting for ever. No launcher helps here: the processes are started bare."""
    port, run = free_port(), tmp_path / "run"
    procs = []
    for rank in (0, 1):
        env = clean_env(
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            VAELAB_DIST_TIMEOUT="4",
        )
        cmd = [
            sys.executable,
            "-m",
            "vaelab",
            "train",
            "--dataset",
            str(npz_dataset),
            *ARGS,
            "--epochs",
            "5000",
            "--out",
            str(run),
        ]
        procs.append(start(cmd, env, tmp_path / f"rank{rank}.log"))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (run / "metrics.csv").exists():  # rank 0 wrote epoch 1: both are training
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "rank0.log").read_text()
            time.sleep(0.05)
        os.kill(procs[1].pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        code = finish(procs[:1])
    finally:
        kill(procs)
    out = (tmp_path / "rank0.log").read_text()
    assert code == [2], out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("vaelab: error:")]
    assert len(errors) == 1 and "process 0 of 2: another process died or stopped answering" in errors[0], out[-3000:]
    assert "Traceback" not in out
    if how == "stop":
        assert "Timed out" in errors[0] and "VAELAB_DIST_TIMEOUT=4 s" in errors[0]
    assert (run / "checkpoint.safetensors").is_file()  # the last epoch's checkpoint is kept for --resume


def test_a_missing_peer_fails_the_start_with_a_clear_error(npz_dataset, tmp_path):
    """Rank 0 of 2 whose peer never comes: DistributedError after VAELAB_DIST_TIMEOUT, exit 2."""
    env = clean_env(
        RANK="0",
        WORLD_SIZE="2",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        VAELAB_DIST_TIMEOUT="2",
    )
    log = tmp_path / "rank0.log"
    proc = start(
        [sys.executable, "-m", "vaelab", "train", "--dataset", str(npz_dataset), *ARGS, "--out", str(tmp_path / "run")],
        env,
        log,
    )
    assert finish([proc]) == [2]
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("vaelab: error: process 0 of 2 could not join the process group at 127.0.0.1:"), last
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


@pytest.mark.slow
def test_two_torchrun_nodes_match_one_process(npz_dataset, tmp_path):
    """A two-node launch simulated on this machine: two torchrun agents, one process each, meeting
    at a c10d rendezvous on 127.0.0.1, train as one process does."""
    one_process(npz_dataset, tmp_path / "one", "--epochs", "2")
    port = free_port()
    procs = [
        start(
            [
                *torchrun(
                    "--nnodes",
                    "2",
                    "--nproc-per-node",
                    "1",
                    "--rdzv-backend",
                    "c10d",
                    "--rdzv-endpoint",
                    f"127.0.0.1:{port}",
                    "--rdzv-id",
                    "vaelab-test",
                ),
                "--dataset",
                str(npz_dataset),
                *ARGS,
                "--epochs",
                "2",
                "--out",
                str(tmp_path / "two"),
            ],
            clean_env(),
            tmp_path / f"node{node}.log",
        )
        for node in (0, 1)
    ]
    codes = finish(procs)
    assert codes == [0, 0], "\n".join((tmp_path / f"node{i}.log").read_text()[-2000:] for i in (0, 1))
    assert_same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_nproc_shortcut_and_resume(npz_dataset, tmp_path):
    """`vaelab train --nproc 2` for 1 epoch, then `--resume --epochs 2` with 2 processes, equals
    2 epochs of 1 process."""
    one_process(npz_dataset, tmp_path / "one", "--epochs", "2")
    run = tmp_path / "two"
    base = [sys.executable, "-m", "vaelab", "train", "--nproc", "2"]
    first = start(
        [*base, "--dataset", str(npz_dataset), *ARGS, "--epochs", "1", "--out", str(run)],
        clean_env(),
        tmp_path / "first.log",
    )
    assert finish([first]) == [0], (tmp_path / "first.log").read_text()[-3000:]
    second = start(
        [*base, "--resume", str(run), "--epochs", "2", "-q", "--no-plots"], clean_env(), tmp_path / "second.log"
    )
    assert finish([second]) == [0], (tmp_path / "second.log").read_text()[-3000:]
    assert_same_run(tmp_path / "one", run)


# -- no processes ----------------------------------------------------------------------------


def test_dist_timeout_reads_the_environment(monkeypatch):
    monkeypatch.setenv("VAELAB_DIST_TIMEOUT", "7.5")
    assert dist_timeout() == 7.5
    monkeypatch.delenv("VAELAB_DIST_TIMEOUT")
    assert dist_timeout() == 120.0
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("VAELAB_DIST_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="VAELAB_DIST_TIMEOUT"):
            dist_timeout()


def test_peer_failures_are_recognised():
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:1: "
        "Connection reset by peer. This is typically caused by a remote worker hanging"
    )
    assert _is_peer_failure(gloo)
    assert _first_line(gloo).startswith("Read error [127.0.0.1]:1: Connection reset by peer")
    assert _is_peer_failure(torch.distributed.DistError("store"))
    assert not _is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert issubclass(DistributedError, RuntimeError)
