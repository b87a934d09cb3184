"""A part of the user's own, registered by a plugin module that VAELAB_PLUGINS names, is taken by the
`vaelab` command like a built-in: in --help's choices, in training, in the run folder and when the
run is loaded again (issue #22). The command runs in a fresh interpreter, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import make_images

PLUGIN = textwrap.dedent(
    '''
    """A user's objective: the ELBO with the KL counted twice (a beta-VAE written as a plugin)."""
    from vaelab.objectives import OBJECTIVES, ObjectiveSpec


    def double_kl(d, cfg, step):
        from vaelab.objectives.base import Outcome, elbo_parts

        elbo, rec, kl = elbo_parts(d)
        value = rec - 2.0 * kl
        return Outcome(value, value, elbo, rec, kl, {"kl_twice": 2.0 * kl})


    OBJECTIVES.register(
        ObjectiveSpec("double-kl", "the ELBO with the KL counted twice", double_kl, terms=("kl_twice",), is_bound=False)
    )
    '''
)


def _vaelab(args: list[str], plugin_dir: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VAELAB_PLUGINS"}
    if plugin_dir is not None:
        env["VAELAB_PLUGINS"] = "my_vaelab_parts"
        env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vaelab", *args], env=env, capture_output=True, text=True, timeout=600)


def test_a_plugin_objective_is_a_choice_trains_and_is_recorded(tmp_path):
    (tmp_path / "my_vaelab_parts.py").write_text(PLUGIN)
    x, y = make_images(300)
    np.savez(tmp_path / "quads.npz", x=x[:, 0], y=y)
    train = [
        "train", "--dataset", str(tmp_path / "quads.npz"), "--hidden", "16", "--latent-dim", "2",
        "--epochs", "1", "--batch-size", "50", "--threads", "1", "--no-plots", "-q", "--objective", "double-kl",
    ]  # fmt: skip

    # without the plugin the name is refused with the choices, exit 2, nothing written
    bare = _vaelab([*train, "--out", str(tmp_path / "bare")], None)
    assert bare.returncode == 2 and "double-kl" in bare.stderr and "elbo" in bare.stderr, bare.stderr
    assert not (tmp_path / "bare").exists()

    # --help lists it among the choices and gives its summary beside the built-ins'
    helped = _vaelab(["train", "--help"], tmp_path)
    shown = " ".join(helped.stdout.split())
    assert helped.returncode == 0 and "double-kl" in shown, helped.stdout[-2000:]
    assert "double-kl: the ELBO with the KL counted twice" in shown, helped.stdout[-3000:]

    run = tmp_path / "run"
    done = _vaelab([*train, "--out", str(run)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["train"]["objective"] == "double-kl"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_kl_twice" in header
    row = dict(zip(header, (run / "metrics.csv").read_text().splitlines()[1].split(",")))
    # the objective is what the plugin says: log p(x|z) - 2 KL, summed over the epoch like the rest
    assert float(row["train_objective"]) == pytest.approx(
        float(row["train_log_px_z"]) - float(row["train_kl_twice"]), rel=1e-5
    )

    # the run folder names the plugin's objective; `vaelab eval` loads and evaluates it
    evaluated = _vaelab(["eval", str(run), "--threads", "1"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "trained with objective double-kl, which is not a bound on log p(x)" in evaluated.stdout
