"""Shared fixtures: seeded randomness, a tiny synthetic dataset and tiny trained runs; and the check
that docs/errors.md quotes each message as the test its row names sees it."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import DataSplits, ImageData
from vaelab.errors import VaelabError

ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@functools.cache
def errors_md_quotes() -> dict[str, list[list[str]]]:
    """docs/errors.md's quoted messages by the one test its table row names: {test id: [quotes of
    each row naming it]} (a test id with its parameters, or a test's name)."""
    out: dict[str, list[list[str]]] = {}
    for line in ERRORS_MD.read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 3 or not line.startswith("| "):
            continue
        tests = re.findall(r"`(test_[^`]+)`", cells[-1])
        if len(tests) == 1:
            quotes = [a or b for a, b in re.findall(r"`` (.+?) ``|`([^`]+)`", cells[1])]  # ``a `b` c``
            out.setdefault(tests[0], []).append(quotes)
    return out


def quote_matches(quote: str, message: str) -> bool:
    """Whether the doc's `quote` is `message`, each "..." in it standing for any text. A quote of the
    CLI's line ("vaelab: error: MESSAGE", "vaelab: MESSAGE") matches the message alone too."""
    bare = re.sub(r"^vaelab(?: [\w-]+)?: (?:error: )?", "", quote)
    return any(
        re.fullmatch(".*?".join(re.escape(part) for part in q.split("...")), message, re.S) for q in (quote, bare)
    )


_RAISED: dict[str, list[str]] = {}  # the messages of the VaelabErrors each test of a module made
_TEST: list[str] = []  # the test running now
_RAN: set[str] = set()  # the tests of the module that ran


@pytest.fixture(scope="module", autouse=True)
def _errors_md_quotes_the_messages_the_tests_saw(request):
    """After a module's tests: every docs/errors.md row naming one of them quotes a message that a
    VaelabError of that test carried ("DIR" its tmp_path, "TMP" the folder above; "..." any text).
    The server's JSON answers count when the test passes them to :func:`answered`. A test that saw
    no message is not checked, and a module that checks the CLI's own lines (ERRORS_MD_CHECKED_HERE:
    test_bad_inputs) is left to its own check."""
    if getattr(request.module, "ERRORS_MD_CHECKED_HERE", False):
        yield
        return
    _RAISED.clear()
    _RAN.clear()
    own = VaelabError.__dict__.get("__init__")  # None: it inherits Exception's
    real = VaelabError.__init__

    def record(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if _TEST:
            _RAISED.setdefault(_TEST[-1], []).append(str(self))

    VaelabError.__init__ = record  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del VaelabError.__init__
        else:
            VaelabError.__init__ = own  # type: ignore[method-assign]
    quotes = errors_md_quotes()
    stale = []
    for test in sorted({n.split("[")[0] for n in _RAN} | _RAN):
        seen = [m for n, ms in _RAISED.items() if n == test or n.split("[")[0] == test for m in ms]
        for row in quotes.get(test, []) if seen else []:  # none: the row quotes another kind of answer
            if row and not any(quote_matches(q, m) for q in row for m in seen):
                stale.append((test, row, seen))
    assert not stale, f"docs/errors.md quotes these otherwise than the tests see them (row, then messages): {stale}"


def answered(message: str) -> str:
    """Record `message`, an answer that is not a VaelabError (the server's JSON), for the errors.md
    check of the test running now; returns it."""
    if _TEST:
        _RAISED.setdefault(_TEST[-1], []).append(message)
    return message


@pytest.fixture(autouse=True)
def _current_test(request, tmp_path_factory):
    _TEST.append(request.node.name)
    _RAN.add(request.node.name)
    yield
    _TEST.pop()
    tmp = request.node.funcargs.get("tmp_path")
    base = tmp_path_factory.getbasetemp()
    shorten = [(str(tmp), "DIR"), (str(tmp.parent), "TMP")] if tmp is not None else [(str(base), "TMP")]
    messages = _RAISED.get(request.node.name, [])
    for i, m in enumerate(messages):
        for long, short in shorten:
            m = m.replace(long, short)
        messages[i] = m


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)  # small tensors: 1 thread is fastest and deterministic
    yield


def make_images(n: int, hw: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images (n, 1, hw, hw) of 4 classes (a bright quadrant per class) plus noise, with labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 1, hw, hw)).astype(np.uint8)
    h = hw // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * h : (r + 1) * h, col * h : (col + 1) * h] = rng.integers(180, 256, (h, h))
    return x, y.astype(np.int64)


@pytest.fixture
def tiny_splits() -> DataSplits:
    x, y = make_images(600)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return DataSplits(
        "synthetic",
        ImageData(t(x[:400]), t(y[:400])),
        ImageData(t(x[400:500]), t(y[400:500])),
        ImageData(t(x[500:]), t(y[500:])),
        num_classes=4,
    )


@pytest.fixture
def tiny_cfg() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="synthetic"),
        model=ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2),
        train=TrainConfig(epochs=2, batch_size=40, seed=0, device="cpu", threads=1, log_every=5),
    )


def with_train(cfg: RunConfig, latent_dim: int = 4, **train: object) -> RunConfig:
    """`cfg` (e.g. the tiny_cfg fixture) with `latent_dim` latents and the given TrainConfig fields."""
    import dataclasses

    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, latent_dim=latent_dim),
        train=dataclasses.replace(cfg.train, **train),
    )


def fit_seeded(cfg: RunConfig, splits: DataSplits, run_dir=None, resume: bool = False):
    """fit() a VAE of cfg.model built after seeding torch with cfg.train.seed (a resume is exact)."""
    from vaelab.models import VAE
    from vaelab.training import fit

    torch.manual_seed(cfg.train.seed)
    return fit(VAE(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


@pytest.fixture
def npz_dataset(tmp_path):
    """A small .npz dataset on disk (600 8x8 images with labels)."""
    x, y = make_images(600)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x[:, 0], y=y)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `vaelab ARGS` in-process: (exit code, stdout, stderr). main() exits only on errors."""
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def train_tiny_run(
    root,
    *,
    n: int = 600,
    hw: int = 8,
    hidden: tuple[int, ...] = (16,),
    latent_dim: int = 2,
    epochs: int = 2,
    batch_size: int = 40,
    name: str = "data",
    **train: object,
):
    """The one helper that trains a small run folder for tests: `n` quadrant images of hw x hw (4
    classes, make_images) written to ROOT/NAME.npz (the run's dataset name), an MLP of `hidden` widths and `latent_dim`,
    `epochs` of fit() with seed 0 and one thread (plus any TrainConfig field in `train`). Returns
    ROOT/run, a run folder as `vaelab train` writes it."""
    from pathlib import Path

    from vaelab.data import load_splits
    from vaelab.models import build_model
    from vaelab.training import fit

    root = Path(root)
    x, y = make_images(n, hw=hw)
    np.savez(root / f"{name}.npz", x=x[:, 0], y=y)
    cfg = RunConfig(
        data=DataConfig(dataset=str(root / f"{name}.npz")),
        model=ModelConfig(input_shape=(1, hw, hw), hidden=hidden, latent_dim=latent_dim),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=0, device="cpu", threads=1, **train),  # type: ignore[arg-type]
    )
    torch.manual_seed(0)
    fit(build_model(cfg.model), load_splits(cfg.data), cfg, root / "run", progress=False)
    return root / "run"


def crash_fit_at_step(monkeypatch, step: int, run: Callable[[], object]) -> None:
    """Run `run()` (a fit) with a simulated crash as training reaches optimizer step `step` (the
    last checkpoint left behind is the one before it), then undo the patch."""
    import vaelab.training.loop as T

    real = T.kl_weight

    def crash(tc, s, steps_per_epoch):
        if s == step:
            raise RuntimeError("simulated crash")
        return real(tc, s, steps_per_epoch)

    monkeypatch.setattr(T, "kl_weight", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run()
    monkeypatch.setattr(T, "kl_weight", real)
