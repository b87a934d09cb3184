"""CPU thread default: leave busy cores out, respect container quotas (moved from test_fastpath)."""

from __future__ import annotations

import pytest


def test_auto_threads_leaves_out_busy_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads auto with 2 usable cores: both when idle, 1 when another process keeps a core (or
    half of one) busy. The default ignores the load: the thread count changes the numbers."""
    from vaelab.platform import cpu

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cpu, "_TORCH_DEFAULT_THREADS", 2)
    monkeypatch.setattr(cpu, "cpu_quota", lambda: None)
    for busy, expected in [(0.0, 2), (0.2, 2), (0.5, 1), (1.0, 1), (1.9, 1)]:
        monkeypatch.setattr(cpu, "busy_cores", lambda cpus, b=busy: b)
        assert cpu.auto_threads() == expected, busy
        assert cpu.resolve_threads("auto") == expected, busy
        assert cpu.default_threads() == 2, busy  # never the load
        assert cpu.resolve_threads(None) == 2 and cpu.resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's explicit choice wins
    assert cpu.default_threads() == 2


def test_default_threads_respects_a_container_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 visible CPUs but `docker --cpus 1.5`: one thread (and never more than the quota)."""
    from vaelab.platform import cpu

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cpu, "_TORCH_DEFAULT_THREADS", 8)
    monkeypatch.setattr(cpu, "busy_cores", lambda cpus: 0.0)
    monkeypatch.setattr(cpu, "cpu_quota", lambda: 1.5)
    assert cpu.default_threads() == 1
    monkeypatch.setattr(cpu, "cpu_quota", lambda: 4.0)
    assert cpu.default_threads() == 4
    monkeypatch.setattr(cpu, "cpu_quota", lambda: None)
    assert cpu.default_threads() == 8


def test_busy_cores_reads_proc_stat() -> None:
    """A core that a spinning process holds reads as (nearly) one busy core: a function returning 0
    (or the whole machine) fails this."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_getaffinity") or not os.path.exists("/proc/stat"):
        pytest.skip("reads Linux's /proc/stat")
    from vaelab.platform.omp import busy_cores

    cpu = min(os.sched_getaffinity(0))
    spin = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time; os.sched_setaffinity(0, {{{cpu}}}); t = time.time()\nwhile time.time() - t < 5: pass",
        ]
    )
    try:
        import time

        time.sleep(0.3)  # the child has started spinning
        assert busy_cores({cpu}, window_s=0.5) >= 0.8
    finally:
        spin.kill()
        spin.wait()


def test_flush_denormal_is_restored_after_the_block() -> None:
    """Subnormals are flushed inside (training speed) and the processor mode is restored after
    (other code, hypothesis for one, refuses to run with flushed subnormals)."""
    import torch

    from vaelab.platform import cpu

    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert float(tiny.mul(1.0)[0]) != 0.0
    with cpu.flush_denormal():
        assert float(tiny.mul(1.0)[0]) == 0.0
    assert float(tiny.mul(1.0)[0]) != 0.0


def _cli_with_busy_cores(busy: float, args: list[str], env: dict[str, str] | None = None):
    """Run the vaelab command in a fresh interpreter (torch not yet loaded, as for a user) with the
    busy-core measurement replaced by `busy`; print the OMP_WAIT_POLICY it left after the command."""
    import os
    import subprocess
    import sys

    code = (
        "import os, vaelab.platform.omp as o\n"
        f"o.busy_cores = lambda cpus, window_s=0.1: {busy!r}\n"
        "from vaelab.cli import main\n"
        f"main({args!r})\n"
        "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_a_busy_core_makes_openmp_wait_passively_and_the_header_says_so(tmp_path) -> None:
    """Issue #23: two threads on a machine with one busy core spun at every OpenMP barrier. The
    command measures the load before torch loads, waits passively then (the same numbers), names
    the thread count in the header and warns with the fix."""
    from vaelab.platform.omp import affinity

    if len(affinity()) < 2:
        pytest.skip("needs two CPUs: one thread has no partner to wait for")
    args = ["train", "--preset", "tiny", "--epochs", "1", "--no-plots", "--threads", "2"]
    busy = _cli_with_busy_cores(1.0, [*args, "--out", str(tmp_path / "busy")])
    assert busy.returncode == 0, busy.stderr
    assert "policy PASSIVE" in busy.stdout
    assert ", 2 threads -> " in busy.stderr
    assert "cores are busy with other processes: 2 threads" in busy.stderr and "--threads 1" in busy.stderr
    idle = _cli_with_busy_cores(0.0, [*args, "--out", str(tmp_path / "idle")])
    assert idle.returncode == 0, idle.stderr
    assert "policy None" in idle.stdout and "cores are busy" not in idle.stderr
    assert ", 2 threads -> " in idle.stderr
    mine = _cli_with_busy_cores(1.0, [*args, "--out", str(tmp_path / "mine")], env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert "policy ACTIVE" in mine.stdout  # the user's own setting is kept
    one = _cli_with_busy_cores(
        1.0,
        ["train", "--preset", "tiny", "--epochs", "1", "--no-plots", "--threads", "1", "--out", str(tmp_path / "one")],
    )
    assert ", 1 thread -> " in one.stderr and "cores are busy" not in one.stderr  # one thread waits for no one


def test_wait_policy_is_left_alone_once_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaelab.platform import omp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(omp, "busy_cores", lambda cpus, window_s=0.1: 2.0)
    assert omp.choose_wait_policy() is None  # torch is imported in this process: too late to matter
    assert "OMP_WAIT_POLICY" not in __import__("os").environ


@pytest.mark.parametrize(
    "command", ["sample", "reconstruct", "encode", "plot", "traverse", "disentangle", "export", "eval"]
)
def test_every_command_that_runs_the_model_takes_threads(command: str) -> None:
    from click.testing import CliRunner

    from vaelab.cli import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "--threads N|AUTO" in result.output
