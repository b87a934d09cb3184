"""Every Python block of README.md runs as written (in a temporary folder), so the README stays true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 1


def test_every_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the blocks write runs/... relative to the working folder
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    nll = float(re.search(r"test NLL ([\d.]+) \+- ", out).group(1))
    assert 80 < nll < 250, out  # a 2-epoch model on binary MNIST: a positive NLL of about 100-200 nats
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()


def test_the_family_docs_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    from vaelab.data import DATASETS
    from vaelab.models import registry as parts
    from vaelab.objectives import OBJECTIVES

    # the docs register a data set, a prior, ...: every registry is restored afterwards
    registries = [DATASETS, OBJECTIVES, *(r for r in vars(parts).values() if hasattr(r, "unregister"))]
    before = [set(r.names()) for r in registries]
    monkeypatch.setattr("vaelab.registry._plugins_loaded", True)
    doc = README.parent / "docs" / "family.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/family.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    finally:
        for registry, names in zip(registries, before):
            for name in set(registry.names()) - names:
                registry.unregister(name)
    assert "torch.Size([5, 8]) torch.Size([5, 8]) torch.Size([5, 8]) None" in capsys.readouterr().out


def test_the_disentanglement_docs_python_block_runs(capsys) -> None:
    doc = README.parent / "docs" / "disentanglement.md"
    (block,) = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    exec(compile(block, "docs/disentanglement.md python block", "exec"), {"__name__": "__docs__"})  # noqa: S102
    out = capsys.readouterr().out
    assert float(re.search(r"MIG ([\d.]+)", out).group(1)) > 0.9
    assert "'disentanglement': " in out and "'informativeness_test': " in out


def test_the_layout_names_every_module_benchmark_and_doc():
    """README's Layout section lists every source module, benchmark script and doc: a new file that
    it does not name makes this fail (issue #22: it listed 6 of 9 docs and missed 10 modules)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    layout = readme[readme.index("## Layout and dependencies") :]
    layout = layout[: layout.index("```", layout.index("```text") + 7)]
    files = [
        *(p for p in (root / "src" / "vaelab").rglob("*.py")),
        *(root / "benchmarks").glob("*.py"),
        *(p for p in (root / "docs").iterdir() if p.suffix in (".md", ".ipynb")),
    ]
    missing = sorted(str(p.relative_to(root)) for p in files if p.name not in layout)
    assert not missing, missing


def test_make_demo_asks_eval_for_nothing_it_does_not_use():
    """#23 item 16: the demo ran `eval --k 1000` on grey pixels and printed '--k 1000 was not used'."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    demo = (root / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert "vaelab eval runs/seed" in demo and "--k" not in demo
    assert "was not used" not in (root / "README.md").read_text()
