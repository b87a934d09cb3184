"""docs/tutorial.ipynb runs from top to bottom (nbclient, a real kernel) and says what it should.

It trains two models for VAELAB_TUTORIAL_EPOCHS epochs (2 here), so it takes about a minute.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_tutorial_notebook_runs_and_reports_nats(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_TUTORIAL_EPOCHS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = "\n".join(_text(c) for c in code)
    elbo = float(re.search(r"test ELBO (-?\d+\.\d+) nats per image", text).group(1))
    assert -300 < elbo < -100  # the tutorial model's ELBO on grey MNIST after 2 epochs is about -150
    assert "refused:" in text and "not a density" in text  # the grey-pixel model gets no NLL
    nll = {int(k): float(v) for k, v in re.findall(r"k=\s*(\d+): NLL (\d+\.\d+)", text)}
    assert set(nll) == {1, 10, 100}
    assert nll[100] <= nll[10] <= nll[1] + 0.5 and 100 < nll[100] < 250  # the bound tightens with k
    # k=1 and the training run's test ELBO are said to be two estimates on other images and draws
    assert "k=1 is the ELBO itself" in text and "with other draws, so the two differ" in text
    pictures = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pictures) == 3  # latent scatter, reconstructions, samples
