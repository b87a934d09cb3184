"""A bounded load test of `vaelab serve` on loopback: N concurrent clients against decode, encode and sample.

    python benchmarks/serve_load.py RUN                       # 32 clients, 30 s and at least 10,000 requests
    python benchmarks/serve_load.py RUN --clients 32 --seconds 30 --json OUT.json

It starts `vaelab serve RUN --port 0 --threads 1` as a subprocess (the real command, one torch thread,
so that the clients have the other core of a 2-core machine), then runs the clients in one asyncio
loop (httpx2, one keep-alive connection each). Each client cycles through POST /api/decode (one
latent), POST /api/encode (one image of random pixels) and POST /api/sample (4 draws). It reports,
per endpoint and overall, the number of requests, p50 and p99 latency (ms, from sending the request
to reading the whole response), requests per second, every status code seen, every client-side
error, and the server's resident memory (VmRSS) after each 1,000 requests.

tests/test_serve_load.py runs it (default test run) and checks: no 5xx, no errors, and memory flat
over 10,000 requests. The figures in BENCHMARKS.md come from this script on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENDPOINTS = ("decode", "encode", "sample")


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    endpoints: dict[str, dict[str, float]]
    statuses: dict[str, int]
    errors: list[str]
    rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests so far, server VmRSS in MB)

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("5"))

    def rss_growth_mb(self, after: int = 2000) -> float:
        """Server memory at the end less its memory after `after` requests (warm-up: caches, arenas)."""
        warm = [mb for n, mb in self.rss_mb if n >= after]
        return warm[-1] - warm[0] if len(warm) >= 2 else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run_dir: str | Path, threads: int = 1) -> tuple[subprocess.Popen[str], str]:
    """`vaelab serve RUN --port 0` in a subprocess; returns it and its URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "serve", str(run_dir), "--port", "0", "--threads", str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("vaelab serve: "):
        proc.kill()
        raise RuntimeError(f"vaelab serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split()[2]


def _bodies(info: dict[str, Any], rng: random.Random) -> dict[str, dict[str, Any]]:
    d = info["latent_dim"]
    c, h, w = info["input_shape"]
    plane = [[round(rng.random(), 3) for _ in range(w)] for _ in range(h)]
    label = {"label": 0} if info["num_classes"] else {}
    return {
        "decode": {"z": [[round(rng.gauss(0, 1), 4) for _ in range(d)]], **label},
        "encode": {"pixels": plane if c == 1 else [plane] * c, **label},
        "sample": {"n": 4, "seed": rng.randrange(2**31), **label},
    }


async def _load(
    url: str, clients: int, seconds: float, min_requests: int, max_seconds: float, pid: int | None
) -> LoadReport:
    import httpx2

    info = json.loads(httpx2.get(url + "api/info").text)
    latencies: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    rss: list[tuple[int, float]] = []
    done = 0
    t0 = time.perf_counter()

    def more() -> bool:
        spent = time.perf_counter() - t0
        return spent < max_seconds and (spent < seconds or done < min_requests)

    async def client(i: int) -> None:
        nonlocal done
        rng = random.Random(i)
        pool = [_bodies(info, rng) for _ in range(8)]  # made once: the clients share the server's machine
        async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
            k = i
            while more():
                name = ENDPOINTS[k % len(ENDPOINTS)]
                body = pool[(k // len(ENDPOINTS)) % len(pool)][name]
                k += 1
                start = time.perf_counter()
                try:
                    r = await http.post(f"api/{name}", json=body)
                    r.read()
                    statuses[str(r.status_code)] += 1
                except Exception as e:  # every failure is counted and reported, none is hidden
                    errors.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                latencies[name].append(1000 * (time.perf_counter() - start))
                done += 1
                if pid is not None and done % 1000 == 0:
                    rss.append((done, rss_mb(pid)))

    if pid is not None:
        rss.append((0, rss_mb(pid)))
    await asyncio.gather(*(client(i) for i in range(clients)))
    spent = time.perf_counter() - t0
    if pid is not None:
        rss.append((done, rss_mb(pid)))
    every = sorted(t for ts in latencies.values() for t in ts)

    def q(ts: list[float], p: float) -> float:
        return statistics.quantiles(ts, n=100, method="inclusive")[int(p) - 1] if len(ts) >= 2 else float("nan")

    per = {
        e: {
            "requests": len(ts),
            "p50_ms": q(sorted(ts), 50),
            "p99_ms": q(sorted(ts), 99),
            "requests_per_s": len(ts) / spent,
        }
        for e, ts in latencies.items()
    }
    return LoadReport(clients, spent, done, done / spent, q(every, 50), q(every, 99), per, dict(statuses), errors, rss)


def run_load(
    url: str,
    clients: int = 32,
    seconds: float = 30,
    min_requests: int = 10_000,
    max_seconds: float = 300,
    server_pid: int | None = None,
) -> LoadReport:
    """Load `url` (a running `vaelab serve`) with `clients` concurrent clients for `seconds` seconds and
    at least `min_requests` requests (at most `max_seconds`); `server_pid` to follow its memory."""
    return asyncio.run(_load(url, clients, seconds, min_requests, max_seconds, server_pid))


def markdown(r: LoadReport, label: str) -> str:
    rows = [
        "| endpoint | requests | p50 ms | p99 ms | requests/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for e, s in r.endpoints.items():
        rows.append(f"| {e} | {s['requests']:,} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['requests_per_s']:.0f} |")
    rows.append(f"| all ({label}) | {r.requests:,} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.requests_per_s:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder to serve")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--min-requests", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    proc, url = start_server(args.run, args.threads)
    try:
        r = run_load(url, args.clients, args.seconds, args.min_requests, server_pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(markdown(r, f"{args.clients} clients, {r.seconds:.0f} s"))
    print(
        f"statuses {r.statuses}; client errors {len(r.errors)}; server RSS {r.rss_mb[0][1]:.0f} MB at start, "
        f"{r.rss_mb[-1][1]:.0f} MB at the end, {r.rss_growth_mb():+.1f} MB after the first 2,000 requests"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({**asdict(r), "cpu_count": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
