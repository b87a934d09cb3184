"""The wheel: `python -m build` packs the presets and the explorer's page, and the wheel installed into
a fresh virtual environment (the pinned CPU torch first, as `make setup` does) trains from outside
the source tree. About a minute, most of it installing torch into the new environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the pin of `make setup`: never let pip pick a (CUDA) torch on its own

pytest.importorskip("build")


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | env
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools rather than download one
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)], cwd=ROOT)
    (path,) = out.glob("vaelab-*.whl")
    return path


def test_wheel_holds_the_presets_and_the_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.name for p in (ROOT / "src" / "vaelab" / "presets").glob("*.toml")}
    assert presets and {f"vaelab/presets/{p}" for p in presets} <= names
    assert {"vaelab/static/index.html", "vaelab/static/app.js", "vaelab/static/style.css", "vaelab/py.typed"} <= names
    for pkg in ("models", "data", "serve"):
        assert f"vaelab/{pkg}/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_wheel_installs_into_a_fresh_venv_and_trains_outside_the_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", TORCH], cwd=tmp_path)
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    where = _run(
        [str(py), "-c", "import vaelab, torch; print(vaelab.__file__); print(torch.__version__)"], cwd=tmp_path
    )
    location, torch_version = where.stdout.split()
    assert Path(location).is_relative_to(venv) and not Path(location).is_relative_to(ROOT)
    assert torch_version.startswith("2.13.0") and "+cpu" in torch_version
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = _run(
        [str(venv / "bin" / "vaelab"), "train", "--preset", "tiny", "--out", "runs/tiny", "-q", "--threads", "1"],
        cwd=work,
    )
    assert "test ELBO" in proc.stdout and "nats per image" in proc.stdout
    assert {p.name for p in (work / "runs" / "tiny").iterdir()} >= {"config.json", "model.safetensors", "samples.png"}
