"""What speed.py measures: groups of contenders (rows), each row a job for a child process, and
the plan of a run from its options (--quick, --gpu, --only, --variants)."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    label: str
    job: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        rates = [r["rate"] for r in self.results if "rate" in r]
        return statistics.median(rates) if rates else None

    @property
    def spread(self) -> str:
        rates = [r["rate"] for r in self.results if "rate" in r]
        if len(rates) < 2:
            return ""
        return f"{min(rates):,.0f}-{max(rates):,.0f}"

    @property
    def peak_mb(self) -> float | None:
        peaks = [r["peak_mb"] for r in self.results if "peak_mb" in r]
        return max(peaks) if peaks else None

    def extra(self, key: str) -> Any:
        vals = [r[key] for r in self.results if key in r]
        if not vals:
            return None
        return statistics.median(vals) if isinstance(vals[0], (int, float)) else vals[0]

    @property
    def note(self) -> str:
        for r in self.results:
            if "skipped" in r:
                return r["skipped"]
            if "error" in r:
                return r["error"]
        return ""


@dataclass
class Group:
    title: str
    rows: list[Row]
    reference: str | None = None  # label of the row the others are divided by ("% of limit")
    comparisons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, numerator, denominator)


def plan(args: argparse.Namespace, threads: str) -> list[Group]:
    q = args.quick
    sec = args.seconds or (1.0 if q else 4.0)
    dev = args.device
    base = {"device": dev, "threads": threads, "seconds": sec}
    fit_images = 10_000 if q else None  # the full-epoch row: all 50k MNIST training images when not quick
    only = set(args.only.split(",")) if args.only else {"train", "eval", "scaling"}  # "family": opt in
    groups: list[Group] = []

    def job(kind: str, **kw: Any) -> dict[str, Any]:
        return {**base, "kind": kind, **kw}

    if args.gpu:
        b = 1024
        seed = {"preset": "seed", "batch": b}
        epoch_images = 10_000 if q else None
        groups.append(
            Group(
                f"GPU: seed preset, batch {b}",
                [
                    Row("limit: matmuls of one step", job("limit", **seed)),
                    Row("limit + fused Adam step", job("limit", **seed, optimizer=True)),
                    Row("vaelab fit (epoch rate)", job("fit", **seed)),
                    Row("vaelab fit, bf16 autocast", job("fit", **seed, overrides={"train.amp": "bf16"})),
                    Row("vaelab fit, torch.compile", job("fit", **seed, overrides={"train.compile": True})),
                    Row(
                        "vaelab fit, torch.compile reduce-overhead",
                        job(
                            "fit",
                            **seed,
                            overrides={"train.compile": True},
                            env={"VAELAB_COMPILE_MODE": "reduce-overhead"},
                        ),
                    ),
                    Row(
                        f"vaelab fit, one full epoch ({'10k' if q else '50k'} images)",
                        job("fit", **seed, images=epoch_images, full_epoch=True),
                    ),
                    Row("host syncs in one epoch (sync debug mode)", job("fit-syncs", **seed, images=epoch_images)),
                ],
                reference="limit: matmuls of one step",
            )
        )
        return groups

    if "train" in only:
        for b in (50, 128, 512):
            seed = {"preset": "seed", "batch": b}
            rows = [
                Row("limit: matmuls of one step", job("limit", **seed)),
                Row("limit + fused Adam step", job("limit", **seed, optimizer=True)),
                Row("vaelab fit (epoch rate)", job("fit", **seed)),
            ]
            comps = []
            if b == 50:
                rows.append(
                    Row(
                        f"vaelab fit, one full epoch ({'10k' if q else '50k'} images)",
                        job("fit", **seed, images=fit_images, full_epoch=True),
                    )
                )
            if b in (50, 128):
                rows.append(Row("PyTorch loop: per-sample Dataset + DataLoader", job("loader", **seed)))
                comps.append(
                    (
                        f"fit/loader at batch {b}",
                        "vaelab fit (epoch rate)",
                        "PyTorch loop: per-sample Dataset + DataLoader",
                    )
                )
            if b == 50:
                hide_gpu = {} if dev.startswith("cuda") else {"env": {"CUDA_VISIBLE_DEVICES": ""}}
                rows.append(Row("Keras 3 (torch backend) model.fit", job("keras", **seed, **hide_gpu)))
                comps.append(("fit/keras at batch 50", "vaelab fit (epoch rate)", "Keras 3 (torch backend) model.fit"))
            groups.append(Group(f"seed preset (784-512-2), batch {b}", rows, "limit: matmuls of one step", comps))
        iw = {"preset": "iwae-paper", "batch": 20}
        groups.append(
            Group(
                "iwae-paper preset (784-200-200-50 tanh), batch 20",
                [
                    Row("limit: matmuls of one step", job("limit", **iw)),
                    Row("limit + fused Adam step", job("limit", **iw, optimizer=True)),
                    Row("vaelab fit (epoch rate)", job("fit", **iw)),
                ],
                "limit: matmuls of one step",
            )
        )
    if "family" in only:  # every variant of Table A at its recipe's batch (100), against its own bound
        variants = [
            ("VAE", "iwae-paper", {}),
            ("IWAE k=5", "iwae-paper", {"train.objective": "iwae", "train.k": 5}),
            ("IWAE k=5, DReG", "iwae-paper", {"train.objective": "iwae", "train.k": 5, "train.estimator": "dreg"}),
            ("IWAE k=50", "iwae-paper", {"train.objective": "iwae", "train.k": 50}),
            ("VampPrior", "iwae-paper", {"model.prior": "vamp"}),
            ("IAF posterior", "iwae-paper", {"model.posterior": "iaf"}),
            ("planar posterior", "iwae-paper", {"model.posterior": "planar"}),
            ("two layers", "iwae-paper-2l", {}),
            ("two layers, IWAE k=5", "iwae-paper-2l", {"train.objective": "iwae", "train.k": 5}),
            ("MIWAE m=2 k=5", "iwae-paper", {"train.objective": "miwae", "train.m": 2, "train.k": 5}),
            (
                "IWAE k=5, DReG, bernoulli-ar",
                "iwae-paper",
                {
                    "train.objective": "iwae",
                    "train.k": 5,
                    "train.estimator": "dreg",
                    "model.likelihood": "bernoulli-ar",
                },
            ),
        ]
        if args.variants:
            wanted = args.variants.split(";")
            unknown = sorted(set(wanted) - {label for label, _, _ in variants})
            if unknown:
                raise SystemExit(
                    f"speed.py: --variants {unknown}: choose from {'; '.join(label for label, _, _ in variants)}"
                )
            variants = [v for v in variants if v[0] in wanted]
        for label, preset, over in variants:
            v = {"preset": preset, "batch": 100, "overrides": over}
            groups.append(
                Group(
                    f"family: {label}, batch 100",
                    [
                        Row("limit: matmuls of one step", job("limit", **v)),
                        Row("vaelab fit (epoch rate)", job("fit", **v)),
                    ],
                    "limit: matmuls of one step",
                )
            )
    if "eval" in only:
        n_eval = args.eval_images or (20 if q else 10_000)
        ev = {"preset": "seed", "k": 5000, "images": n_eval, "batch": min(n_eval, 100)}
        groups.append(
            Group(
                f"evaluation: importance-sampled NLL, K=5000, {n_eval} test images",
                [
                    Row("limit: matmuls of the same computation", job("eval-limit", **ev)),
                    Row("vaelab log_likelihood", job("eval", **ev)),
                ],
                "limit: matmuls of the same computation",
            )
        )
    if "scaling" in only:
        sizes = (10_000, 60_000) if q else (10_000, 60_000, 600_000)
        groups.append(
            Group(
                "scaling with the dataset size (seed preset, batch 50, synthetic images)",
                [
                    Row(f"vaelab fit, {n // 1000}k images", job("fit", preset="seed", batch=50, synthetic=n))
                    for n in sizes
                ],
            )
        )
        ks = (100, 1000) if q else (100, 1000, 5000)
        n_eval = 20 if q else 200
        groups.append(
            Group(
                f"scaling with K (evaluation, seed preset, {n_eval} images)",
                [
                    Row(f"vaelab log_likelihood, K={k}", job("eval", preset="seed", k=k, images=n_eval, batch=n_eval))
                    for k in ks
                ],
            )
        )
    return groups
