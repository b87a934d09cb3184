"""The reproduction table: each row a shipped preset trained to its budget, then `vaelab eval --k 5000`.

    python benchmarks/reproduce.py --out ~/vaelab-runs/reproduce --jobs 2   # every row not done yet
    python benchmarks/reproduce.py --out DIR --rows burda-vae,burda-iwae-k5 # some rows
    python benchmarks/reproduce.py --table                                   # the table of finished rows
    python benchmarks/reproduce.py --out DIR --ship zoo                      # copy finished rows' models
    python benchmarks/reproduce.py --verify zoo                              # they evaluate to their rows

Every number comes from the product: `vaelab train --preset ROW` (the preset holds the whole recipe:
model, objective, schedule, budget in epochs or steps, split) and `vaelab eval RUN --k 5000` on all
10,000 test images (the test set binarized once, seed 2, as for every MNIST run). Budgets count
epochs, never minutes, so a busy machine slows a row but does not change its result. Each row runs
with one CPU thread (`--threads 1`): on this 2-core machine two 1-thread rows finish 1.7x the work
of one 2-thread row (BENCHMARKS.md).

A row is resumable: killed mid-training (a session that ends, a reboot), a rerun continues it from
its checkpoint (`vaelab train --resume`); a trained row waits for its evaluation in RUN/train.json;
a finished row is saved to RESULTS/ROW.json and skipped on a rerun. The CPU time of every training
and evaluation process is summed into the row (CPU-hours). Run it from a frozen copy of the code
(`git archive` of a commit, recorded in the row as VAELAB_COMMIT) so that the work tree can change
meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from harness import vaelab

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "reproduce"


@dataclass(frozen=True)
class Row:
    preset: str
    paper: str  # the anchor, with its protocol
    published: float | None  # nats, the anchor's test NLL (nll rows)
    target: float | None  # nats: the row meets it when its NLL is at most this (nll rows)
    measure: str = "nll"  # "nll": eval --k 5000; "disentangle": the five metrics, then eval --k 1
    optional: bool = False  # the second table: its results are kept, its weights not shipped


ROWS: dict[str, Row] = {
    "burda-vae": Row("burda-vae", "Burda et al. 2016, VAE k=1, 3280 epochs", 86.76, 86.76),
    "burda-iwae-k5": Row("burda-iwae-k5", "Burda et al. 2016, IWAE k=5, 3280 epochs", 85.54, 85.54),
    "burda-iwae-k5-dreg": Row(
        "burda-iwae-k5-dreg", "Tucker et al. 2018 (DReG), IWAE k=5, Burda's recipe", 84.90, 84.90
    ),
    "burda-2l-iwae-k5": Row(
        "burda-2l-iwae-k5", "Burda et al. 2016, two stochastic layers, IWAE k=5, 3280 epochs", 83.89, 83.89
    ),
    "mnist-best-long": Row(
        "mnist-best-long", "DARN (Gregor et al. 2014), static MNIST: ~84.13; target 83.0", 84.13, 83.0
    ),
    "vampprior": Row(
        "vampprior", "Tomczak & Welling 2018, dynamic MNIST, as re-run by Norouzi et al. 2020", 82.43, 82.5
    ),
    # target: beta-TCVAE's MIG >= 0.15 and >= the VAE's + 0.05 (disentanglement_lib's study, 300,000 steps:
    # MIG mostly 0.05-0.35)
    "vae-dsprites": Row(
        "vae-dsprites", "disentanglement_lib's study (Locatello et al. 2019)", None, None, "disentangle"
    ),
    "btcvae-dsprites": Row(
        "btcvae-dsprites", "disentanglement_lib's study (Locatello et al. 2019)", None, None, "disentangle"
    ),
    # The optional rows, for when time remains or a GPU is lent: last, so that a plain rerun
    # finishes the table above first. They are not shipped: the first table's weights fill most of
    # the zoo's 25 MB and these hold 4.5-6 MB each; their results and commands are kept.
    # Fashion-MNIST: about 1 (VAE) and 3.5 (VampPrior) CPU-hours. k = 50: about 4x a k = 5 row's CPU
    # per image (441 against 1,860 images/s, one layer, one thread).
    "fashion-vae": Row(
        "fashion-vae",
        "Norouzi et al. 2020 (Exemplar VAE), Table 1, dynamic Fashion-MNIST, N(0, I) prior",
        228.70,
        228.70,
        optional=True,
    ),
    "fashion-vampprior": Row(
        "fashion-vampprior",
        "Norouzi et al. 2020 (Exemplar VAE), Table 1, dynamic Fashion-MNIST, VampPrior",
        227.35,
        227.35,
        optional=True,
    ),
    "burda-iwae-k50": Row("burda-iwae-k50", "Burda et al. 2016, IWAE k=50, 3280 epochs", 84.78, 84.78, optional=True),
    "burda-iwae-k50-dreg": Row(
        "burda-iwae-k50-dreg", "Tucker et al. 2018 (DReG), IWAE k=50, Burda's recipe", 84.32, 84.32, optional=True
    ),
    "burda-2l-iwae-k50": Row(
        "burda-2l-iwae-k50",
        "Burda et al. 2016, two stochastic layers, IWAE k=50, 3280 epochs",
        82.90,
        82.90,
        optional=True,
    ),
}


def run(cmd: list[str], log: Path, progress: Callable[[float], None] | None = None, interval: float = 60.0) -> float:
    """Run `cmd` with its output appended to `log`; return its CPU seconds (user + system).

    progress(seconds) is told the child's CPU seconds so far every `interval` seconds (read from
    /proc), so that a runner killed in the middle of a row (the end of a session) leaves the CPU time
    of what was trained recorded, not lost with the child's exit status.
    """
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        last = time.monotonic()
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if progress is not None and time.monotonic() - last >= interval:
                progress(cpu_seconds(p.pid))
                last = time.monotonic()
            time.sleep(min(1.0, interval))
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {code}; see {log}")
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux /proc; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_json(cmd: list[str], log: Path) -> tuple[str, float]:
    """Run `cmd`, which prints JSON; return its standard output and CPU seconds."""
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed")
    return stdout, usage.ru_utime + usage.ru_stime


def run_row(name: str, out: Path, results: Path, threads: int) -> dict[str, Any]:
    row = ROWS[name]
    run_dir = out / name
    log = out / f"{name}.log"
    cpu_file = out / f"{name}.cpu.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.exists() else {"train": 0.0, "eval": 0.0}
    train_cmd = vaelab("train", "--preset", row.preset, "--out", str(run_dir), "--threads", str(threads))
    if not (run_dir / "train.json").exists():
        if (run_dir / "checkpoint.safetensors").exists():
            cmd = vaelab("train", "--resume", str(run_dir))
        else:
            cmd = [*train_cmd, "--overwrite"]
        base = dict(cpu)  # a killed runner leaves the CPU time trained so far in cpu_file
        cpu["train"] += run(cmd, log, lambda s: cpu_file.write_text(json.dumps({**base, "train": base["train"] + s})))
        cpu_file.write_text(json.dumps(cpu))
        (run_dir / "train.json").write_text(json.dumps({"command": shlex.join(train_cmd)}))
    k = "5000" if row.measure == "nll" else "1"  # a conv model of 64 x 64 images: the ELBO, KL, active units
    eval_cmd = vaelab("eval", str(run_dir), "--k", k, "--threads", str(threads), "--json")
    stdout, seconds = run_json(eval_cmd, log)
    ev = json.loads(stdout)
    cpu["eval"] += seconds
    metrics_cmd: list[str] = []
    scores: dict[str, Any] = {}
    if row.measure == "disentangle":
        metrics_cmd = vaelab("disentangle", str(run_dir), "--threads", str(threads), "--json")
        stdout, seconds = run_json(metrics_cmd, log)
        scores = json.loads(stdout)
        cpu["eval"] += seconds
    cpu_file.write_text(json.dumps(cpu))
    cfg = json.loads((run_dir / "config.json").read_text())
    last = harness.metrics(run_dir)[-1]
    result = {
        "row": name,
        "preset": row.preset,
        "paper": row.paper,
        "published": row.published,
        "target": row.target,
        "nll": ev["nll"] if row.measure == "nll" else None,
        "nll_stderr": ev["nll_stderr"] if row.measure == "nll" else None,
        "disentanglement": scores or None,
        "elbo": ev["elbo"],
        "kl": ev["kl"],
        "active_units": ev.get("active_units"),
        "latent_dim": ev.get("latent_dim"),
        "epochs": int(float(last["epoch"])),
        "steps": int(float(last["step"])),
        "budget_epochs": cfg["train"]["epochs"],
        "cpu_hours_train": cpu["train"] / 3600,
        "cpu_hours_eval": cpu["eval"] / 3600,
        "commit": os.environ.get("VAELAB_COMMIT", "unrecorded"),
        "commands": [harness.shown(c) for c in (train_cmd, eval_cmd, metrics_cmd) if c],
        "eval": ev,
    }
    results.mkdir(parents=True, exist_ok=True)
    harness.save(results / f"{name}.json", result)
    return result


def nll_cells(name: str, r: dict[str, Any]) -> list[str]:
    met = "met" if r["nll"] <= r["target"] else f"missed by {r['nll'] - r['target']:.2f}"
    return [
        f"`{name}`", r["paper"], f"{r['published']:.2f}", f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}",
        f"≤ {r['target']:.2f}: {met}", f"{r['kl']:.2f}", f"{r['active_units']} / {r['latent_dim']}",
        f"{r['epochs']} ({r['budget_epochs']})", f"{r['cpu_hours_train'] + r['cpu_hours_eval']:.2f}",
    ]  # fmt: skip


def disentangle_cells(name: str, r: dict[str, Any]) -> list[str]:
    d = r["disentanglement"]
    return [
        f"`{name}`", f"{d['mig']:.3f}", f"{d['sap']:.3f}", f"{d['dci_disentanglement']:.3f}",
        f"{d['beta_vae_score']:.3f}", f"{d['factor_vae_score']:.3f}", f"{r['kl']:.2f}",
        f"{r['active_units']} / {r['latent_dim']}", str(r["steps"]), f"{r['cpu_hours_train'] + r['cpu_hours_eval']:.2f}",
    ]  # fmt: skip


def table(results: Path) -> str:
    """The finished rows: the first table's NLL rows, its disentanglement rows, then the optional rows."""
    done = harness.finished(results, ROWS)
    columns = ["row", "paper", "published", "vaelab NLL ± s.e.", "target", "KL", "active units", "epochs (budget)"]

    def nll_table(optional: bool) -> list[str]:
        rows = [nll_cells(n, r) for n, r in done.items() if r["nll"] is not None and ROWS[n].optional == optional]
        return [harness.md_table([*columns, "CPU-hours"], "llrrlrrrr", rows)] if rows or not optional else []

    tables = nll_table(optional=False)
    scored = {n: r for n, r in done.items() if r.get("disentanglement")}
    if scored:
        dis_columns = ["row", "MIG", "SAP", "DCI dis.", "β-VAE score", "FactorVAE score", "KL", "active units", "steps"]
        cells = (disentangle_cells(n, r) for n, r in scored.items())
        tables.append(harness.md_table([*dis_columns, "CPU-hours"], "l" + "r" * len(dis_columns), cells))
    tables += nll_table(optional=True)
    return "\n\n".join(tables)


PICTURES = ("samples.png", "reconstructions.png", "learning_curves.png")  # the small ones: zoo/ < 25 MB


def ship(out: Path, results: Path, zoo: Path) -> None:
    """Copy each finished first-table row's run folder, without its training checkpoint, to ZOO/ROW."""
    # the last weights only (restore_best rows end on their best epoch): the zoo stays under 25 MB
    keep = ("config.json", "model.safetensors", "metrics.csv", "eval.json", "disentanglement.json")
    for name, row in ROWS.items():
        if not (results / f"{name}.json").exists():
            continue
        if row.optional:
            print(f"{name}: an optional row, not shipped (its result stays in {results})")
            continue
        src, dst = out / name, zoo / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name in keep or f.name in PICTURES:
                shutil.copy2(f, dst / f.name)
        shutil.copy2(results / f"{name}.json", dst / "result.json")


def verify(zoo: Path, threads: int) -> int:
    """Evaluate every shipped model in ZOO as its row was evaluated and compare with its result.json:
    the same command on the same weights must give the table's numbers (to 0.01 nats)."""
    bad = 0
    for name in ROWS:
        folder = zoo / name
        if not (folder / "result.json").is_file():
            continue
        r = json.loads((folder / "result.json").read_text())
        k = "5000" if r["nll"] is not None else "1"
        with tempfile.TemporaryDirectory() as tmp:  # eval writes eval.json: not into the zoo
            copy = Path(tmp) / name
            shutil.copytree(folder, copy)
            out = subprocess.run(
                vaelab("eval", str(copy), "--k", k, "--threads", str(threads), "--json"),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        ev = json.loads(out)
        key = "nll" if r["nll"] is not None else "elbo"
        ok = abs(ev[key] - r[key]) <= 0.01
        bad += not ok
        print(f"{name}: {key} {ev[key]:.2f} against the table's {r[key]:.2f}: {'ok' if ok else 'DIFFERENT'}")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", type=Path, help="folder of the run folders (outside the work tree); training and --ship need it"
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help=f"finished rows' JSON (default {RESULTS})")
    ap.add_argument("--rows", help="comma-separated rows (default: all, the optional ones last): " + ", ".join(ROWS))
    ap.add_argument("--jobs", type=int, default=1, help="rows trained at once, each with --threads")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the table of finished rows and stop")
    ap.add_argument("--ship", type=Path, help="copy finished rows' models (no checkpoint) to this folder and stop")
    ap.add_argument("--verify", type=Path, help="evaluate the shipped models in this folder against their rows")
    args = ap.parse_args()
    if args.table:
        print(table(args.results))
        return
    if args.verify:
        raise SystemExit(verify(args.verify, args.threads))
    if args.out is None:
        ap.error("--out DIR (the folder of the run folders) is needed to train rows or to --ship them")
    if args.ship:
        ship(args.out.expanduser(), args.results, args.ship)
        return
    names = harness.pick(ap, args.rows, ROWS, unknown="unknown row(s)")
    todo = [n for n in names if not (args.results / f"{n}.json").exists()]
    out = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {n: pool.submit(run_row, n, out, args.results, args.threads) for n in todo}
        for n, fut in futures.items():
            fut.result()
            print(f"{n}: done ({args.results / (n + '.json')})", flush=True)
    print(table(args.results))


if __name__ == "__main__":
    main()
