"""The package's shape (#22): the public API listed once, the version in one place, imports that
point one way (plots takes arrays; the run folder's code does not import the package face), one
atomic writer, and a thin CLI."""

from __future__ import annotations

import ast
import importlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np

import vaelab
from vaelab.config_io import tomllib

SRC = Path(vaelab.__file__).parent


def _imports(module: str) -> set[str]:
    """Every module that `module`'s source imports (vaelab.X for `from vaelab import X`), at any depth."""
    tree = ast.parse((SRC / module).read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "vaelab":
                out |= {f"vaelab.{a.name}" for a in node.names}
    return out


def test_the_public_api_is_listed_once():
    tree = ast.parse((SRC / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {a.name: n.module for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert seen == vaelab._EXPORTS  # what type checkers see is what __getattr__ gives
    assert vaelab.__all__ == ["__version__", *vaelab._EXPORTS]
    for name, module in vaelab._EXPORTS.items():
        assert vaelab.__getattr__(name) is getattr(importlib.import_module(module), name), name
    assert "evaluate_run" in vaelab.__all__ and "encode_means" in vaelab.__all__


def test_no_public_name_of_a_package_face_is_also_one_of_its_modules():
    """Importing a submodule binds its name on the package: had vaelab a module `evaluate` beside the
    function `vaelab.evaluate`, `vaelab.fit(...)` (which imports it) would turn `vaelab.evaluate`
    into a module, and the documented `vaelab.evaluate(model, test, ...)` would fail."""
    import pkgutil

    for face in ("vaelab", "vaelab.models", "vaelab.evaluation"):
        package = importlib.import_module(face)
        modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        assert not modules & set(package._EXPORTS), face


def _fresh_python_asserts(code: str) -> None:
    """Run `code` in a new interpreter (nothing of vaelab imported yet); its asserts must hold."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_public_functions_stay_functions_after_the_library_has_loaded_its_modules():
    _fresh_python_asserts(
        "import vaelab, vaelab.training, vaelab.run.outputs, vaelab.cli\n"
        "assert callable(vaelab.evaluate) and callable(vaelab.fit) and callable(vaelab.load), vaelab.evaluate"
    )


def test_reading_eval_json_imports_no_torch():
    _fresh_python_asserts("import sys, vaelab.evaluation.records\nassert 'torch' not in sys.modules, 'torch imported'")


def test_the_version_is_written_once_and_matches_the_project():
    from vaelab._version import __version__

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    assert vaelab.__version__ == __version__ == project["version"]


def test_imports_point_down_the_layers():
    # plots takes arrays and returns figures: no data, no run folder, no files
    assert not {
        "vaelab.data",
        "vaelab.analysis.factors",
        "vaelab.platform.storage",
        "vaelab.run.checkpoint",
    } & _imports("plots.py")
    # what writes run folders and exports gets the version without importing the package face
    for module in ("run/checkpoint.py", "export.py", "serve/app.py"):
        assert "vaelab.__version__" not in _imports(module) and "vaelab" not in _imports(module), module
    # nothing below the CLI imports the training loop for a helper
    for module in (
        "evaluation/estimates.py",
        "evaluation/plan.py",
        "evaluation/records.py",
        "evaluation/report.py",
        "analysis/factors.py",
        "run/outputs.py",
        "plots.py",
    ):
        assert not any(m == "vaelab.training" or m.startswith("vaelab.training.") for m in _imports(module)), module
    assert not any(m.startswith("vaelab.serve") for m in _imports("serve/explorer.py") if m != "vaelab.serve.guards")
    # the machine's layer (device, threads, signals, file writes) stands on nothing of vaelab but its errors
    for path in sorted((SRC / "platform").glob("*.py")):
        used = {m for m in _imports(f"platform/{path.name}") if m.startswith("vaelab")}
        assert used <= {"vaelab.errors"} | {f"vaelab.platform.{p.stem}" for p in path.parent.glob("*.py")}, path.name


def test_files_written_from_memory_go_through_one_atomic_helper(tmp_path):
    from vaelab.platform.storage import atomic_write_with

    a = np.arange(6.0).reshape(2, 3)
    atomic_write_with(tmp_path / "a.npy", lambda f: np.save(f, a))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # no temporary file left
    for module in (
        "cli.py",
        "cli_options.py",
        "run/outputs.py",
        "plots.py",
        "evaluation/report.py",
        "run/setup.py",
        "analysis/prior_fit.py",
    ):
        assert "BytesIO" not in (SRC / module).read_text(), module
    buf = io.BytesIO()
    np.save(buf, a)
    assert (tmp_path / "a.npy").read_bytes() == buf.getvalue()


def test_the_cli_is_thin():
    """Each command parses, builds configs and calls one library function (STYLE.md, #22)."""
    lines = (SRC / "cli.py").read_text().count("\n")
    assert lines <= 650, lines
    for module in (
        "evaluation/estimates.py",
        "evaluation/report.py",
        "plots.py",
        "run/outputs.py",
        "run/setup.py",
        "run/checkpoint.py",
        "analysis/factors.py",
    ):
        n = (SRC / module).read_text().count("\n")
        assert n <= 470, (module, n)


def test_every_train_shortcut_flag_sets_a_config_field():
    from vaelab.cli import cli
    from vaelab.cli_options import flag_overrides
    from vaelab.config import RunConfig

    own = {"preset", "config_file", "out", "resume", "overwrite", "conditional", "hidden", "nproc", "no_plots"}
    own |= {"invert", "quiet", "tensorboard"}
    flags = {p.name: 1 for p in cli.commands["train"].params if p.name not in own}
    keys = flag_overrides(flags)
    fields = RunConfig().to_dict()
    assert len(keys) == len(flags) and all(k.split(".")[1] in fields[k.split(".")[0]] for k in keys), keys
    assert keys["train.warmup_epochs"] == 1 and keys["train.batch_size"] == 1
