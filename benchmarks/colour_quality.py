"""Does a colour preset learn anything in a CPU budget? Issue #23 (posterior collapse), measured on
colour shapes whose information content is known (vaelab.data.colour_shapes: 19.04 bits = 13.2 nats
per image in 8 factors), through `vaelab train` and `vaelab eval`.

    python benchmarks/colour_quality.py --data ~/colour              # the preset as shipped, 10 min
    python benchmarks/colour_quality.py --data ~/colour --before     # warm-up and free bits off
    python benchmarks/colour_quality.py --data ~/colour --both       # both, then a table
    python benchmarks/colour_quality.py --data /tmp/c --minutes 1 --n 4000 --eval-limit 200   # smoke

Writes DATA/colour_shapes-SIZE-N.npz once (20,000 32 x 32 images by default: 16,000 train, 2,000
validation, 2,000 test), then for each setting runs

    vaelab train --preset cifar --dataset DATA/colour_shapes-32-20000.npz --max-minutes M --out RUN
        [--warmup 0 --train.free_bits=0]                                       (--before)
    vaelab eval RUN --k 10 --limit 1000 --json

and prints bits/dim, the KL (nats), the active units and where the pictures are (RUN/*.png), and
writes RUN/colour_quality.json. RUN is DATA/runs/SETTING-Mmin (SETTING: shipped or before). A model
whose latents carry the factors has a KL near 13 nats and reconstructions that show the shapes; a
collapsed one has KL ~0, 0 active units and flat pictures. Active units (Burda et al.) can be met
by noise too: read bits/dim and the pictures with them. Keep the machine otherwise idle for
timings; the numbers of a --max-minutes run depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from harness import metrics, now, run, shown, vaelab

from vaelab.data.colour_shapes import information_bits, write_colour_shapes

OLD_SETTINGS = ["--warmup", "0", "--train.free_bits=0"]  # the presets before issue #23


def measure(args: argparse.Namespace, data: Path, before: bool) -> dict[str, Any]:
    setting = "before" if before else "shipped"
    out = data.parent / "runs" / f"{setting}-{args.minutes:g}min"
    train = vaelab(
        "train", "--preset", args.preset, "--dataset", str(data), "--max-minutes", f"{args.minutes:g}",
        "--out", str(out), "--overwrite", "--seed", str(args.seed),
    )  # fmt: skip
    if args.preset == "celeba64":
        train += ["--data.image_size", "none"]  # the .npz is already 64 x 64
    if args.threads is not None:
        train += ["--threads", str(args.threads)]
    if before:
        train += OLD_SETTINGS
    output, train_s = run(train, setting, echo=True)
    print(output.strip().splitlines()[-1], flush=True)
    ev = vaelab("eval", str(out), "--k", str(args.eval_k), "--limit", str(args.eval_limit), "--json")
    if args.threads is not None:
        ev += ["--threads", str(args.threads)]
    report = json.loads(run(ev, setting, echo=True)[0])
    last = metrics(out)[-1]
    config = json.loads((out / "config.json").read_text())
    result = {
        "setting": setting,
        "preset": args.preset,
        "free_bits": config["train"].get("free_bits", 0.0),
        "warmup_epochs": config["train"]["warmup_epochs"],
        "minutes": args.minutes,
        "steps": int(last["step"]),
        "epochs": float(last["epoch"]) - 1 + float(last["epoch_fraction"]),
        "final_kl_weight": float(last["kl_weight"]),
        "bpd": report.get("bpd"),
        "nll": report.get("nll"),
        "elbo": report["elbo"],
        "kl": report["kl"],
        "active_units": report["active_units"],
        "latent_dim": report["latent_dim"],
        "eval_images": report["num_images"],
        "eval_k": args.eval_k,
        "pictures": sorted(str(p) for p in out.glob("*.png")),
        "run": str(out),
        "train_seconds_wall": round(train_s, 1),
        "commands": [shown(train), shown(ev)],
        "date": now(),
    }
    (out / "colour_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def describe(r: dict[str, Any], info_nats: float) -> str:
    bpd = "n/a" if r["bpd"] is None else f"{r['bpd']:.3f}"
    return "\n".join(
        [
            f"{r['setting']}: preset {r['preset']}, free_bits {r['free_bits']:g}, warmup_epochs {r['warmup_epochs']}; "
            f"{r['minutes']:g} min, {r['steps']} steps ({r['epochs']:.2f} epochs), final KL weight "
            f"{r['final_kl_weight']:.2f}",
            f"  bits/dim {bpd} (k={r['eval_k']}, {r['eval_images']} test images); ELBO {r['elbo']:.1f} nats",
            f"  KL {r['kl']:.2f} nats (the factors hold {info_nats:.1f}); active units {r['active_units']} of "
            f"{r['latent_dim']}",
            f"  pictures: {', '.join(r['pictures']) or 'none'}",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="Folder (outside the repository) for the data and runs.")
    ap.add_argument("--minutes", type=float, default=10.0, help="vaelab train --max-minutes [10].")
    ap.add_argument("--n", type=int, default=20_000, help="Images to write [20000].")
    ap.add_argument("--preset", choices=["cifar", "celeba64"], default="cifar", help="[cifar: 32 x 32; celeba64: 64]")
    ap.add_argument("--seed", type=int, default=0, help="Training seed [0]; the data always use seed 0.")
    ap.add_argument("--threads", help="vaelab --threads (N or auto) [vaelab's default].")
    ap.add_argument("--eval-k", type=int, default=10, help="vaelab eval --k [10].")
    ap.add_argument("--eval-limit", type=int, default=1000, help="vaelab eval --limit [1000].")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--before", action="store_true", help="Train with warm-up and free bits off (the old presets).")
    which.add_argument("--both", action="store_true", help="Train the old settings, then the shipped ones.")
    args = ap.parse_args()

    size = 64 if args.preset == "celeba64" else 32
    args.data.mkdir(parents=True, exist_ok=True)
    data = args.data / f"colour_shapes-{size}-{args.n}.npz"
    if not data.is_file():
        t0 = time.monotonic()
        write_colour_shapes(data, n=args.n, size=size, seed=0)
        print(f"wrote {data} ({args.n} images {size}x{size}x3, {time.monotonic() - t0:.1f} s)", flush=True)
    info_bits = information_bits(size)
    info_nats = info_bits * 0.6931471805599453
    print(
        f"information content: {info_bits:.2f} bits = {info_nats:.1f} nats per image "
        f"({info_bits / (3 * size * size):.4f} bits/dim)",
        flush=True,
    )
    settings = [True, False] if args.both else [args.before]
    results = [measure(args, data, before) for before in settings]
    print()
    for r in results:
        print(describe(r, info_nats))


if __name__ == "__main__":
    main()
