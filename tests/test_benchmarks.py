"""The benchmark drivers' shared harness (benchmarks/harness.py) and the parts of the drivers that run
without training anything: the row loop (skip what is done, save each row whole, print a line), the
row selection, the markdown tables, and speed.py's plan split over its modules. Timings are never
measured here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/X.py` has it


def test_the_row_loop_skips_finished_rows_saves_each_row_whole_and_prints_a_line(tmp_path, capsys):
    import harness

    results = tmp_path / "results"
    results.mkdir()
    (results / "a.json").write_text(json.dumps({"row": "a", "x": 0}))
    measured = []

    def measure(row: str) -> dict | None:
        measured.append(row)
        return None if row == "c" else {"row": row, "x": len(measured)}

    harness.run_rows(results, ["a", "b", "c", "d"], measure, lambda r: f"x = {r['x']}")
    assert measured == ["b", "c", "d"]  # a was done before; c is not finished (measure gave None)
    assert sorted(p.name for p in results.iterdir()) == ["a.json", "b.json", "d.json"]  # no .tmp left
    assert json.loads((results / "d.json").read_text()) == {"row": "d", "x": 3}
    out = capsys.readouterr().out.splitlines()
    assert out == [f"a: done before, skipped ({results / 'a.json'})", "b: x = 1", "d: x = 3"]
    assert list(harness.finished(results, ["d", "c", "b", "a"])) == ["d", "b", "a"]


def test_rows_can_be_any_object_with_a_key_and_a_label(tmp_path, capsys):
    import harness

    harness.run_rows(
        tmp_path,
        [("vae", 0), ("vae", 1)],
        lambda row: {"seed": row[1]},
        lambda r: "ok",
        key=lambda row: f"{row[0]}-s{row[1]}",
        label=lambda row: f"{row[0]} seed {row[1]}",
    )
    assert (tmp_path / "vae-s1.json").is_file()
    assert capsys.readouterr().out.splitlines() == ["vae seed 0: ok", "vae seed 1: ok"]


def test_pick_takes_a_subset_in_its_order_and_refuses_unknown_rows(capsys):
    import harness

    p = argparse.ArgumentParser(prog="x")
    assert harness.pick(p, None, {"a": 1, "b": 2}) == ["a", "b"]
    assert harness.pick(p, "b, a", ["a", "b"]) == ["b", "a"]
    with pytest.raises(SystemExit):
        harness.pick(p, "a,zz", ["a", "b"], unknown="unknown models")
    assert "unknown models ['zz']; choose from a, b" in capsys.readouterr().err


def test_markdown_tables_and_commands():
    import harness

    text = harness.md_table(["row", "NLL", "note"], "lrl", [["a", 1.5, ""], ["b", None, None]])
    assert text.splitlines() == ["| row | NLL | note |", "|---|---:|---|", "| a | 1.5 |  |", "| b | | |"]
    cmd = harness.vaelab("train", "--out", "a folder")
    assert cmd[:3] == [sys.executable, "-m", "vaelab"]
    assert harness.shown(cmd) == "vaelab train --out 'a folder'"
    assert harness.threads_args(None) == [] and harness.threads_args(2) == ["--threads", "2"]


def test_a_failed_command_ends_the_driver_with_its_command_and_error():
    import harness

    failing = [sys.executable, "-c", "import sys; sys.exit('no such command')", "nope"]  # shown as `vaelab nope`
    with pytest.raises(SystemExit, match=r"row-x: vaelab nope failed \(1\):\nno such command"):
        harness.run(failing, "row-x")


def test_metrics_reads_the_run_folders_csv(tmp_path):
    import harness

    (tmp_path / "metrics.csv").write_text("epoch,step,val_elbo\n1,10,-100.5\n2,20,-99.0\n")
    assert harness.metrics(tmp_path) == [
        {"epoch": "1", "step": "10", "val_elbo": "-100.5"},
        {"epoch": "2", "step": "20", "val_elbo": "-99.0"},
    ]


@pytest.mark.parametrize(
    ("driver", "first_column"),
    [("family_table", "row"), ("discrete_table", "model"), ("disentangle_table", "model"), ("colour_speed", "preset")],
)
def test_each_table_driver_prints_its_table_of_no_finished_rows(driver, first_column, tmp_path, capsys):
    module = __import__(driver)
    module.main(["--table", "--results", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"| {first_column} |") and lines[1].startswith("|---|")
    assert not list(tmp_path.iterdir())  # --table writes nothing


def test_the_family_table_prints_a_finished_row(tmp_path, capsys):
    import family_table

    row = {"nll": 87.949, "nll_stderr": 0.231, "elbo": -91.99, "epochs": 285, "minutes": 10.0, "threads": 2}
    (tmp_path / "vae.json").write_text(json.dumps(row))
    family_table.main(["--table", "--results", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| vae | 87.95 ± 0.23 | -91.99 | 285 | 10 | 2 |"
    assert out[3] == "| iwae-k5 | (not run yet) | | | | |"


def test_speed_plans_the_same_rows_from_its_modules():
    """speed.py is split over speed_*.py: its plan still covers every group, and each row's job is
    one the child side knows."""
    import speed
    from speed_plan import plan

    args = argparse.Namespace(
        quick=True,
        seconds=None,
        device="cpu",
        gpu=False,
        only="train,eval,scaling,family",
        variants=None,
        eval_images=None,
    )
    groups = plan(args, "1")
    titles = [g.title for g in groups]
    assert titles[0] == "seed preset (784-512-2), batch 50"
    assert sum(t.startswith("family: ") for t in titles) == 11
    assert {row.job["kind"] for g in groups for row in g.rows} <= set(speed.JOBS)
    with pytest.raises(SystemExit):
        plan(argparse.Namespace(**{**vars(args), "variants": "no such variant"}), "1")


def test_reproduce_records_a_rows_cpu_time_while_it_runs(tmp_path):
    """A runner killed in the middle of a row (the end of a session) must leave the CPU time of what
    it trained recorded: run() reports the child's CPU seconds so far while it runs, and the total at
    the end is at least the last report."""
    import reproduce

    seen: list[float] = []
    burn = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass"]
    total = reproduce.run(burn, tmp_path / "log.txt", seen.append, interval=0.3)
    assert seen and all(b >= a for a, b in zip(seen, seen[1:]))  # reported more than once, never less
    assert 0.2 < seen[-1] <= total + 0.05 and total >= 1.4, (seen, total)
    assert reproduce.cpu_seconds(999_999_999) == 0.0  # a process that is gone reads as nothing


def test_every_reproduction_row_is_a_shipped_preset_with_its_anchor():
    """A row names a preset that loads (a typo would surface hours into a run), and an NLL row has
    its published figure and target; the row's preset comment names the row."""
    from importlib import resources

    import reproduce

    from vaelab.config_io import load_preset

    for name, row in reproduce.ROWS.items():
        load_preset(row.preset)
        comment = resources.files("vaelab").joinpath("presets", f"{row.preset}.toml").read_text()
        assert f"row {name} " in comment, name
        if row.measure == "nll":
            assert row.published is not None and row.target is not None, name
        else:
            assert row.measure == "disentangle" and load_preset(row.preset).data.dataset == "shapes2d", name


def _reproduce_record(row: str, nll: float) -> dict:
    """A finished row's record as run_row writes it (the fields the table and ship read)."""
    return {
        "row": row, "paper": "a paper", "published": 80.0, "target": 81.0, "nll": nll, "nll_stderr": 0.2,
        "disentanglement": None, "kl": 20.0, "active_units": 9, "latent_dim": 50, "epochs": 3,
        "budget_epochs": 3, "cpu_hours_train": 1.0, "cpu_hours_eval": 0.25,
    }  # fmt: skip


def test_reproduce_ships_the_first_tables_rows_and_tables_the_optional_ones_apart(tmp_path):
    """zoo/ gets a finished first-table row's folder without its checkpoint, and never an optional
    row's (their weights would pass the zoo's 25 MB); the table prints the optional rows last, in
    their own table, with the met/missed verdict against the target."""
    import reproduce

    out, results, zoo = tmp_path / "runs", tmp_path / "results", tmp_path / "zoo"
    results.mkdir()
    for row, nll in (("burda-vae", 88.0), ("fashion-vae", 80.5)):
        (out / row).mkdir(parents=True)
        for f in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.csv", "samples.png"):
            (out / row / f).write_text(f)
        (results / f"{row}.json").write_text(json.dumps(_reproduce_record(row, nll)))
    reproduce.ship(out, results, zoo)
    assert sorted(p.name for p in (zoo / "burda-vae").iterdir()) == [
        "config.json", "metrics.csv", "model.safetensors", "result.json", "samples.png"
    ]  # fmt: skip
    assert json.loads((zoo / "burda-vae" / "result.json").read_text())["nll"] == 88.0
    assert not (zoo / "fashion-vae").exists()
    first, optional = reproduce.table(results).split("\n\n")
    assert "| `burda-vae` |" in first and "missed by 7.00" in first and "fashion-vae" not in first
    assert "| `fashion-vae` |" in optional and "≤ 81.00: met" in optional and "| 1.25 |" in optional
