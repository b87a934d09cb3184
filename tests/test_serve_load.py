"""A bounded load test of `vaelab serve` (benchmarks/serve_load.py): 32 concurrent clients on
loopback for 30 seconds, and at least 10,000 requests, against decode, encode and sample.

What it checks: no 5xx and no client-side errors, every answer a 200, and the server's memory flat
over the requests. Its speed figures are not checked here (a shared CI machine makes them noise);
the idle-machine figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx2")

ROOT = Path(__file__).resolve().parents[1]


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small 28x28 model (784-64-2), one epoch on synthetic images: what the server does per request
    is the same code for any MLP model."""
    from conftest import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("load"), hw=28, hidden=(64,), epochs=1, batch_size=50)


def test_32_clients_for_30_seconds_get_only_200s_and_memory_stays_flat(run_dir):
    load = _serve_load()
    proc, url = load.start_server(run_dir)
    try:
        r = load.run_load(url, clients=32, seconds=30, min_requests=10_000, max_seconds=300, server_pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\n{load.markdown(r, '32 clients')}\nserver RSS (requests, MB): {r.rss_mb}")
    assert r.errors == [] and r.server_errors == 0, (r.errors[:5], r.statuses)
    assert r.statuses == {"200": r.requests}
    assert r.requests >= 10_000 and r.seconds >= 30
    assert all(r.endpoints[e]["requests"] > 3000 for e in load.ENDPOINTS)
    # Flat memory: after the first 2,000 requests (allocator arenas, caches), the server grows by
    # less than 16 MB over the remaining 8,000 or more; a leak of one image per request (3 KB) would
    # add 24 MB.
    growth = r.rss_growth_mb(after=2000)
    assert growth < 16, r.rss_mb
