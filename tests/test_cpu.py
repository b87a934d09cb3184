"""CPU thread default: leave busy cores out, respect container quotas (moved from test_fastpath)."""

from __future__ import annotations

import pytest


def test_auto_threads_leaves_out_busy_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads auto with 2 usable cores: both when idle, 1 when another process keeps a core (or
    half of one) busy. The default ignores the load: the thread count changes the numbers."""
    from vaelab import cpu

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
    from vaelab import cpu

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
    """A number of busy cores between 0 and the number of cores (sampled over 10 ms)."""
    import os

    from vaelab.cpu import busy_cores

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
    assert 0.0 <= busy_cores(cpus, window_s=0.01) <= len(cpus) + 1e-9


def test_flush_denormal_is_restored_after_the_block() -> None:
    """Subnormals are flushed inside (training speed) and the processor mode is restored after
    (other code, hypothesis for one, refuses to run with flushed subnormals)."""
    import torch

    from vaelab import cpu

    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert float(tiny.mul(1.0)[0]) != 0.0
    with cpu.flush_denormal():
        assert float(tiny.mul(1.0)[0]) == 0.0
    assert float(tiny.mul(1.0)[0]) != 0.0
