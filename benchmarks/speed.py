"""How fast vaelab trains and evaluates, next to the machine's limit and to the usual ways of writing it.

One command measures, interleaved (A B C A B C ...) so that machine drift cancels out of the ratios:

  limit     the matrix multiplies of one training step alone (forward and backward of every layer,
            the exact shapes, strides and thread settings of the preset and batch), replayed from a
            recording of a real step into preallocated outputs: what no training loop can beat;
  fit       vaelab's own fit(): samples/s over a (time-boxed) epoch, and one full MNIST epoch;
  loader    the typical PyTorch loop: a per-sample Dataset converting one uint8 image to float (as
            torchvision's ToTensor does), a DataLoader, plain Adam, `loss.item()` per step;
  keras     the tutorial's code: the same model in Keras 3 (KERAS_BACKEND=torch, functional API,
            model.fit(batch_size=50)); skipped with a note when keras is not installed
            (`pip install -e '.[bench]'`);
  eval      importance-sampled NLL with K=5000 (vaelab.evaluation.log_likelihood), images/s, and
            the matrix multiplies of the same computation alone.

Every measurement runs in its own subprocess, which also gives its peak resident memory
(ru_maxrss). Scaling rows show how time grows with the dataset size and with K.

    python benchmarks/speed.py --quick                  # a few seconds per row: check that it runs
    python benchmarks/speed.py --threads 1,2            # the full CPU benchmark (idle machine)
    python benchmarks/speed.py --threads 1,2 --busy     # the same with one core kept busy
    python benchmarks/speed.py --device cuda --gpu      # GPU: seed preset at batch 1024, MNIST epoch

See benchmarks/README.md for what each row means and docs/speed.md for the findings.

The code: this file runs a plan (speed_plan.py: the groups of rows, each row a job) in child
processes of itself (`--child JOB`) and reports it (speed_report.py). A child runs one job: the
limit (speed_limit.py), vaelab or the usual ways of writing it (speed_contenders.py), with the
tools they share (speed_common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speed_common import peak_rss_mb, set_threads
from speed_contenders import job_eval, job_fit, job_fit_syncs, job_keras, job_loader
from speed_limit import job_eval_limit, job_limit
from speed_plan import Group, plan
from speed_report import report, target_lines

HERE = Path(__file__).resolve()


# =============================================================================================
# Child side: one measurement per process
# =============================================================================================

JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "limit": job_limit,
    "fit": job_fit,
    "fit-syncs": job_fit_syncs,
    "loader": job_loader,
    "keras": job_keras,
    "eval": job_eval,
    "eval-limit": job_eval_limit,
}


def child(job: dict[str, Any]) -> None:
    threads = set_threads(job["threads"])
    out = JOBS[job["kind"]](job)
    out.update(threads=threads, peak_mb=peak_rss_mb())
    print("RESULT " + json.dumps(out))


# =============================================================================================
# Parent side: groups of contenders, measured in interleaved rounds
# =============================================================================================


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONWARNINGS="ignore", **job.get("env", {}))
    cmd = [sys.executable, str(HERE), "--child", json.dumps(job)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {p.returncode}: {tail}"}


def measure(group: Group, rounds: int, timeout: float, log: Callable[[str], None]) -> None:
    """rounds x (every row once, in order): A B C A B C ..., so that drift hits every row alike."""
    for r in range(rounds):
        for row in group.rows:
            if any("skipped" in res for res in row.results):
                continue  # nothing changes in the next rounds
            res = run_child(row.job, timeout)
            row.results.append(res)
            shown = f"{res['rate']:,.0f} {res['unit']}" if "rate" in res else res.get("skipped") or res.get("error")
            log(f"  round {r + 1}/{rounds}  {row.label:<48} {shown}")


class Burner:
    """`--busy`: a process spinning on one core (pinned to the last core when possible) for the
    whole measurement, as a browser, a second training run or another user would."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.proc = enabled, None

    def __enter__(self) -> Burner:
        if self.enabled:
            code = (
                "import os\ntry: os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\n"
                "except (AttributeError, OSError): pass\nwhile True: pass\n"
            )
            self.proc = subprocess.Popen([sys.executable, "-c", code])
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def machine_description(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vaelab.platform.cpu import default_threads

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    cfg = torch.__config__.show()
    blas = "MKL" if "USE_MKL=ON" in cfg else ("OpenBLAS" if "openblas" in cfg.lower() else "other")
    desc = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas": blas,
        "torch_default_threads": torch.get_num_threads(),
        "vaelab_default_threads": default_threads(),
        "loadavg_at_start": list(os.getloadavg()),
        "busy": args.busy,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name()
    return desc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (about 1 s per row, small subsets)")
    p.add_argument(
        "--threads",
        default="default",
        help="comma-separated thread settings, each measured in turn: e.g. 1,2 or default",
    )
    p.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process throughout")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--gpu", action="store_true", help="the GPU rows: seed preset at batch 1024, MNIST epoch")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of: train,eval,scaling,family "
        "(family: the VAE-family variants at batch 100; not in the default run)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="with --only family: the variants to measure, their labels separated by ';' "
        "(default: all), e.g. 'IWAE k=5, DReG;IWAE k=5, DReG, bernoulli-ar'",
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group (default 3; 2 quick)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per timed row (default 4; 1 quick)")
    p.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="test images for the K=5000 row (default: the whole test set, 10000; 20 with --quick)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every raw result here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables here (for BENCHMARKS.md)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return
    if args.gpu and not args.device.startswith("cuda"):
        args.device = "cuda"
    rounds = args.rounds or (2 if args.quick else 3)
    desc = machine_description(args)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("machine: " + json.dumps(desc))
    md = ["## Machine", "", "```", json.dumps(desc, indent=1), "```", ""]
    raw: dict[str, Any] = {"machine": desc, "runs": []}
    summary: list[str] = []
    timeout = 900 if not args.quick else 300
    with Burner(args.busy):
        for threads in args.threads.split(","):
            threads = threads.strip()
            for g in plan(args, threads):
                log(f"== {g.title} (threads {threads})")
                measure(g, rounds, timeout, log)
                text, figs = report([g], desc, threads)
                print(text, flush=True)
                md.append(text)
                raw["runs"].append(
                    {
                        "threads": threads,
                        "group": g.title,
                        "rows": [{"label": r.label, "job": r.job, "results": r.results} for r in g.rows],
                    }
                )
                raw.setdefault("figures", {}).setdefault(threads, {}).update(figs)
            summary += target_lines(raw["figures"].get(threads, {}), threads)
    desc["loadavg_at_end"] = list(os.getloadavg())
    print("\n".join(summary))
    md += ["```", *summary, "```"]
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
