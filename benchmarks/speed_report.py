"""speed.py's report: a markdown table per group (median rate, range, share of the limit, peak
memory, notes) and the figures checked against the issue's targets."""

from __future__ import annotations

from typing import Any

from speed_plan import Group

# The targets, printed next to the measurements (never asserted: timings are not tests).
TARGETS = {
    "fit/limit at batch 50": 0.80,
    "fit/limit at batch 512": 0.90,
    "fit/loader at the tutorial's batch": 2.5,
    "fit/keras at batch 50": 4.0,
    "eval/limit at K=5000": 0.60,
    "peak MB, MNIST training": 600.0,
    "GPU samples/s at batch 1024": 2e6,
    "GPU seconds per MNIST epoch": 0.1,
}


def fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def report(groups: list[Group], desc: dict[str, Any], threads: str) -> tuple[str, dict[str, float]]:
    """Markdown tables for one thread setting, and the figures checked against TARGETS."""
    lines, figures = [], {}
    for g in groups:
        ref = next((r for r in g.rows if r.label == g.reference), None)
        unit = next((r.results[0].get("unit", "") for r in g.rows if r.results and "unit" in r.results[0]), "")
        lines += [
            f"### {g.title} (threads: {threads}{', one core busy' if desc['busy'] else ''})",
            "",
            f"| contender | {unit} (median) | range | vs limit | peak RSS MB | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in g.rows:
            frac = f"{r.rate / ref.rate:.0%}" if (ref and r.rate and ref.rate and r is not ref) else ""
            notes = [r.note] if r.note else []
            for key, fmt in (
                ("gflops", "{:.1f} GFLOP/s"),
                ("epoch_seconds", "epoch {:.2f} s"),
                ("fit_wall_seconds", "fit() {:.1f} s incl. val+test"),
                ("syncs", "{} syncs"),
                ("steps", "in {} steps"),
                ("samples_per_s", "{:,.0f} samples/s"),
                ("gpu_peak_mb", "GPU peak {:.0f} MB"),
                ("threads_used", "{:.0f} threads"),
            ):
                v = r.extra(key)
                if (
                    v is not None
                    and (key != "epoch_seconds" or r.job.get("full_epoch"))
                    and (key != "fit_wall_seconds" or r.job.get("full_epoch"))
                ):
                    notes.append(fmt.format(v))
            if r.job.get("synthetic") and r.rate:
                notes.append(f"{r.job['synthetic'] / r.rate:.1f} s per epoch")
            peak = "-" if r.peak_mb is None else f"{r.peak_mb:.0f}"
            lines.append(f"| {r.label} | {fmt_rate(r.rate)} | {r.spread} | {frac} | {peak} | {'; '.join(notes)} |")
        for name, num, den in g.comparisons:
            a = next((r.rate for r in g.rows if r.label == num), None)
            b = next((r.rate for r in g.rows if r.label == den), None)
            if a and b:
                lines.append(f"\n{name}: **{a / b:.2f}x**")
                figures[name] = a / b
        lines.append("")
        fit = next((r for r in g.rows if r.label == "vaelab fit (epoch rate)"), None)
        if ref and fit and fit.rate and ref.rate:
            if "batch 50" in g.title and g.title.startswith("seed"):
                figures["fit/limit at batch 50"] = fit.rate / ref.rate
            if "batch 512" in g.title:
                figures["fit/limit at batch 512"] = fit.rate / ref.rate
        ev = next((r for r in g.rows if r.label == "vaelab log_likelihood"), None)
        if ref and ev and ev.rate and ref.rate:
            figures["eval/limit at K=5000"] = ev.rate / ref.rate
        full = next((r for r in g.rows if "full epoch" in r.label), None)
        if full and full.peak_mb and not g.title.startswith("GPU"):
            figures["peak MB, MNIST training"] = full.peak_mb
        if g.title.startswith("GPU"):
            rates = [r.rate for r in g.rows if r.label.startswith("vaelab fit") and r.rate and r is not full]
            if rates:
                figures["GPU samples/s at batch 1024"] = max(rates)
            if full and full.extra("epoch_seconds") is not None:
                figures["GPU seconds per MNIST epoch"] = full.extra("epoch_seconds")
    if "fit/loader at batch 50" in figures:
        figures["fit/loader at the tutorial's batch"] = figures["fit/loader at batch 50"]
    return "\n".join(lines), figures


def target_lines(figures: dict[str, float], threads: str) -> list[str]:
    out = [f"Targets (threads: {threads}): measured vs wanted"]
    for name, want in TARGETS.items():
        if name not in figures:
            continue
        got = figures[name]
        at_most = name.startswith("peak") or "seconds" in name
        ok = got <= want if at_most else got >= want
        if name.startswith("GPU"):
            shown, wanted = f"{got:,.3g}", f"{'<' if at_most else '>='} {want:,.3g}"
        elif name.startswith("peak"):
            shown, wanted = f"{got:.0f}", f"<= {want:.0f}"
        elif want < 1.5:
            shown, wanted = f"{got:.0%}", f">= {want:.0%}"
        else:
            shown, wanted = f"{got:.2f}x", f">= {want}x"
        out.append(f"  {'met ' if ok else 'MISS'}  {name:<36} {shown:>8}  (target {wanted})")
    return out
