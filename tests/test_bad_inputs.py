"""The catalogue of bad inputs (docs/errors.md): each gets one clear line on stderr and exit code 2
from the CLI, a typed exception from the library, and leaves nothing half-written on disk.

Set VAELAB_ERROR_CATALOGUE=FILE to collect the actual messages (temporary paths shortened) as JSON;
docs/errors.md quotes them, and after the module's tests the fixture that collects them checks that
every table row of docs/errors.md naming one of these tests quotes its message as it reads now
("..." in a quote stands for any text).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from conftest import errors_md_quotes, quote_matches, run_cli
from vaelab.cli import main
from vaelab.config import DataConfig, ModelConfig, TrainConfig
from vaelab.data import MNIST_FILES, idx_bytes, load_splits
from vaelab.errors import CheckpointError, ConfigError, DataError, StorageError, VaelabError
from vaelab.run import checkpoint as ckpt

ERRORS_MD_CHECKED_HERE = True  # its fixture compares the CLI lines (click's too) with docs/errors.md
_MESSAGES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_catalogue():
    yield
    path = os.environ.get("VAELAB_ERROR_CATALOGUE")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        Path(path).write_text(json.dumps({**old, **_MESSAGES}, indent=1, sort_keys=True))
    # docs/errors.md quotes the messages the tests above saw: every row naming one of them must quote it
    quotes = errors_md_quotes()
    stale = {
        name: (row, line)
        for name, line in _MESSAGES.items()
        for row in quotes.get(name, [])
        if row and not any(quote_matches(q, line) for q in row)
    }
    assert not stale, f"docs/errors.md quotes these messages otherwise than they read now: {stale}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes; {} when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cli_error(request, capsys, tmp_path):
    """Run `vaelab ARGS`; assert exit code 2 and one line matching `pattern`; return the line."""

    def run(args: list[str], pattern: str) -> str:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
            raise SystemExit(0)
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
        assert "Traceback" not in err
        assert re.search(pattern, err), err
        line = err.strip()
        for p, short in ((str(tmp_path), "DIR"), (str(Path(tmp_path).parent), "TMP")):
            line = line.replace(p, short)
        _MESSAGES[request.node.name] = line
        return line

    return run


# -- data -----------------------------------------------------------------------------------------


def write_idx_folder(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> Path:
    """Four valid MNIST-like IDX files with 8x8 images."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in MNIST_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return folder


def idx_case(mutate):
    """A builder: valid IDX folder, then `mutate(folder)`; returns (dataset, data_dir)."""

    def build(tmp: Path) -> tuple[str, str | None]:
        folder = write_idx_folder(tmp / "idx", gz=getattr(mutate, "gz", False))
        mutate(folder)
        return "mnist", str(folder)

    return build


def gz(f):
    f.gz = True
    return f


TRAIN_IMAGES = MNIST_FILES["train_images"]
TRAIN_LABELS = MNIST_FILES["train_labels"]


@gz
def _truncate_gzip(folder: Path) -> None:
    p = folder / f"{TRAIN_IMAGES}.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@gz
def _corrupt_gzip(folder: Path) -> None:
    (folder / f"{TRAIN_IMAGES}.gz").write_bytes(b"this is not gzip data at all")


def _wrong_magic(folder: Path) -> None:
    p = folder / TRAIN_IMAGES
    p.write_bytes(b"\x12\x34\x08\x03" + p.read_bytes()[4:])


def _wrong_dims(folder: Path) -> None:  # the header claims 40 images, the file holds 30
    p = folder / TRAIN_IMAGES
    data = bytearray(p.read_bytes())
    data[4:8] = (40).to_bytes(4, "big")
    p.write_bytes(bytes(data))


def _images_of_rank_2(folder: Path) -> None:
    (folder / TRAIN_IMAGES).write_bytes(idx_bytes(np.zeros((30, 64), np.uint8)))


def _count_mismatch(folder: Path) -> None:
    (folder / TRAIN_LABELS).write_bytes(idx_bytes(np.zeros(29, np.uint8)))


def _missing_file(folder: Path) -> None:
    (folder / TRAIN_LABELS).unlink()


def npz_case(**arrays):
    def build(tmp: Path) -> tuple[str, str | None]:
        path = tmp / "data.npz"
        np.savez(path, **arrays)
        return str(path), None

    return build


def raw_file(name: str, data: bytes):
    def build(tmp: Path) -> tuple[str, str | None]:
        (tmp / name).write_bytes(data)
        return str(tmp / name), None

    return build


def npz_with_raw_member(tmp: Path) -> tuple[str, str | None]:
    import zipfile

    path = tmp / "data.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x", b"raw bytes, not an .npy array")
    return str(path), None


def npz_with_pickle(tmp: Path) -> tuple[str, str | None]:
    path = tmp / "data.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))  # np.load would need a pickle to read it
    return str(path), None


def image_folder(*files: tuple[str, object]):
    """files: (relative name, (h, w) for a PNG of that size, or bytes for raw content)."""

    def build(tmp: Path) -> tuple[str, str | None]:
        from PIL import Image

        folder = tmp / "images"
        folder.mkdir()
        for name, content in files:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                Image.fromarray(np.zeros(content, np.uint8)).save(path)
        return str(folder), None

    return build


GOOD = np.random.default_rng(0).integers(0, 256, (10, 8, 8), dtype=np.uint8)

DATA_CASES = {
    "truncated_gzip": (idx_case(_truncate_gzip), r"\.gz: cannot read it \(.*\); the file is truncated or corrupt"),
    "corrupt_gzip": (idx_case(_corrupt_gzip), r"\.gz: cannot read it \(Not a gzipped file"),
    "idx_wrong_magic": (idx_case(_wrong_magic), r"bad IDX magic number 0x12340803"),
    "idx_wrong_dimensions": (
        idx_case(_wrong_dims),
        r"IDX header says shape \(40, 8, 8\) \(2560 data bytes\) but the file holds 1920",
    ),
    "idx_images_of_rank_2": (idx_case(_images_of_rank_2), r"expected uint8 images \(N, H, W\), got uint8 \(30, 64\)"),
    "idx_image_label_count_mismatch": (idx_case(_count_mismatch), r"has 30 images but .* has 29 labels"),
    "idx_file_missing": (idx_case(_missing_file), r"no train-labels-idx1-ubyte or train-labels-idx1-ubyte\.gz"),
    "npz_without_x": (npz_case(images=GOOD), r"no array named 'x' \(found \['images'\]\)"),
    "npz_with_nan": (
        npz_case(x=np.where(GOOD > 128, np.nan, 0.5).astype(np.float32)),
        r"x contains NaN or infinite values",
    ),
    "npz_float_outside_0_1": (
        npz_case(x=GOOD.astype(np.float32)),
        r"float pixels must lie in \[0, 1\], found range \[0, 255\]",
    ),
    "npz_int_outside_0_255": (
        npz_case(x=GOOD.astype(np.int16) * 3 - 5),
        r"integer pixels must lie in \[0, 255\], found range \[-5, 760\]",
    ),
    "npz_wrong_dtype": (npz_case(x=GOOD.astype(np.complex64)), r"x has dtype complex64; store uint8"),
    "npz_wrong_rank": (npz_case(x=GOOD.reshape(10, 64)), r"x has shape \(10, 64\); expected \(N, H, W\)"),
    "npz_zero_sized_images": (
        npz_case(x=np.zeros((10, 0, 8), np.float32)),
        r"x has shape \(10, 1, 0, 8\); images need positive sizes",
    ),
    "npz_label_count_mismatch": (npz_case(x=GOOD, y=np.zeros(9, np.int64)), r"x has 10 images but y has 9 labels"),
    "npz_float_labels": (npz_case(x=GOOD, y=np.zeros(10, np.float32)), r"y must be integer labels of shape \(N,\)"),
    "npz_negative_labels": (npz_case(x=GOOD, y=-np.ones(10, np.int64)), r"labels must be >= 0, found -1"),
    "npz_not_a_zip": (raw_file("data.npz", b"PK\x03\x04 truncated zip"), r"not a readable \.npz file"),
    "npz_with_pickled_object_array": (
        npz_with_pickle,
        r"not a readable \.npz file \(ValueError: Object arrays cannot be loaded when allow_pickle=False",
    ),
    "npz_member_not_npy": (npz_with_raw_member, r"member\(s\) \['x'\] are not \.npy arrays"),
    "image_folder_empty": (image_folder(), r"images: no images found; put PNG files in it"),
    "image_folder_non_image_file": (
        image_folder(("a.png", (8, 8)), ("notes.txt", b"hello")),
        r"notes\.txt: not an image file",
    ),
    "image_folder_corrupt_png": (
        image_folder(("a.png", (8, 8)), ("b.png", b"\x89PNG\r\n\x1a\n garbage")),
        r"b\.png: cannot decode the image",
    ),
    "image_folder_mixed_sizes": (
        image_folder(("a.png", (8, 8)), ("b.png", (8, 10))),
        r"b\.png: size 10x8 differs from 8x8 of the first image",
    ),
    "dataset_path_missing": (lambda tmp: (str(tmp / "nowhere.npz"), None), r"no such file or folder"),
    "dataset_wrong_file_type": (raw_file("data.csv", b"1,2,3\n"), r"expected a \.npz file or a folder, got \.csv"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data(case, tmp_path, cli_error):
    build, pattern = DATA_CASES[case]
    src = tmp_path / "src"
    src.mkdir()
    dataset, data_dir = build(src)
    before = snapshot(src)
    with pytest.raises(DataError, match=pattern):
        load_splits(DataConfig(dataset=dataset, data_dir=data_dir))
    out = tmp_path / "out"
    args = ["train", "--preset", "tiny", "--dataset", dataset, "--out", out, "-q", "--no-plots", "--epochs", "1"]
    cli_error(args + (["--data-dir", data_dir] if data_dir else []), pattern)
    assert not out.exists()  # the run folder is created only after the data passed its checks
    assert snapshot(src) == before  # and the input is left as it was


# -- configuration and numbers ----------------------------------------------------------------


def test_config_file_with_unknown_key(tmp_path, cli_error):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlearning_rate = 0.1\n")
    cli_error(
        ["train", "--config", cfg, "--out", tmp_path / "out"],
        r"c\.toml \[train\]: unknown key\(s\) \['learning_rate'\]; known keys: \[.*'lr'",
    )
    assert not (tmp_path / "out").exists()


def test_config_file_with_unknown_section(tmp_path, cli_error):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[optimizer]\nlr = 0.1\n")
    cli_error(["train", "--config", cfg, "--out", tmp_path / "out"], r"unknown section\(s\) \['optimizer'\]")
    assert not (tmp_path / "out").exists()


def test_config_file_with_wrong_type(tmp_path, cli_error):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nlatent_dim = "two"\n')
    cli_error(
        ["train", "--config", cfg, "--out", tmp_path / "out"], r"\[model\] latent_dim must be an integer, got 'two'"
    )
    assert not (tmp_path / "out").exists()


def test_config_file_not_toml(tmp_path, cli_error):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train\nlr = \n")
    cli_error(["train", "--config", cfg, "--out", tmp_path / "out"], r"c\.toml: not valid TOML")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, pattern",
    [
        pytest.param(["--batch-size", "0"], r"batch_size must be a positive integer, got 0", id="batch_size_zero"),
        pytest.param(
            ["--batch-size", "-5"], r"batch_size must be a positive integer, got -5", id="batch_size_negative"
        ),
        pytest.param(
            ["--latent-dim", "0"],
            r"latent_dim must be a positive integer, got 0 \(try --latent-dim 2\)",
            id="latent_dim_zero",
        ),
        pytest.param(
            ["--latent-dim", "-3"], r"latent_dim must be a positive integer, got -3", id="latent_dim_negative"
        ),
        pytest.param(["--lr", "0"], r"lr must be a positive number, got 0\.0", id="lr_zero"),
        pytest.param(["--lr", "-0.001"], r"lr must be a positive number, got -0\.001", id="lr_negative"),
        pytest.param(["--lr", "nan"], r"lr must be a positive number, got nan", id="lr_nan"),
        pytest.param(["--epochs", "0"], r"epochs must be a positive integer, got 0", id="epochs_zero"),
        pytest.param(["--hidden", "16,x"], r"--hidden '16,x': give comma-separated integers", id="hidden_not_integers"),
        pytest.param(
            ["--hidden", "16,-4"], r"hidden sizes must be positive integers, got \(16, -4\)", id="hidden_negative"
        ),
        pytest.param(
            ["--train.lr=fast"], r"overrides \[train\] lr must be a number, got 'fast'", id="override_wrong_type"
        ),
        pytest.param(["--train.learning_rate=0.1"], r"unknown key\(s\) \['learning_rate'\]", id="override_unknown_key"),
        pytest.param(
            ["--optim.lr=0.1"], r"override 'optim\.lr' must look like SECTION\.KEY", id="override_unknown_section"
        ),
        pytest.param(
            ["--model.latent_dim=2.5"], r"latent_dim must be an integer, got 2\.5", id="override_float_for_int"
        ),
        pytest.param(["--binarize", "sometimes"], r"Invalid value for '--binarize'", id="bad_choice"),
        pytest.param(
            ["--threads", "0"],
            r"Invalid value for .--threads.: .0. is not a positive integer or auto",
            id="threads_zero",
        ),
    ],
)
def test_bad_numbers_and_types(args, pattern, tmp_path, npz_dataset, cli_error):
    out = tmp_path / "out"
    cli_error(["train", "--preset", "tiny", "--dataset", npz_dataset, "--out", out, "-q", *args], pattern)
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
        ({"lr": 0.0}, r"lr must be a positive number, got 0\.0"),
        ({"lr": -1.0}, r"lr must be a positive number, got -1\.0"),
        ({"epochs": True}, r"epochs must be a positive integer, got True"),
    ],
)
def test_library_configs_raise_config_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**kwargs)


def test_library_model_config_rejects_zero_latent():
    with pytest.raises(ConfigError, match=r"latent_dim must be a positive integer, got 0"):
        ModelConfig(latent_dim=0)


# -- run folders ----------------------------------------------------------------------------------


def _train(args: list) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
        raise SystemExit(0)
    assert e.value.code == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny trained runs: a plain one, another architecture, a conditional one (4 classes)."""
    from conftest import make_images

    base = tmp_path_factory.mktemp("runs")
    x, y = make_images(300)
    np.savez(base / "tiny.npz", x=x[:, 0], y=y)
    common = [
        "train",
        "--preset",
        "tiny",
        "--dataset",
        base / "tiny.npz",
        "--epochs",
        "1",
        "--batch-size",
        "40",
        "--threads",
        "1",
        "-q",
        "--no-plots",
    ]
    _train([*common, "--hidden", "16", "--out", base / "plain"])
    _train([*common, "--hidden", "12", "--latent-dim", "3", "--out", base / "other"])
    _train([*common, "--hidden", "16", "--conditional", "--out", base / "cond"])
    return base


@pytest.fixture
def run_copy(runs, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(runs / "plain", dst)
    return dst


def _alter_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _to_float64(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.double() for k, v in load_file(path).items()}, path)  # a valid file, without a SHA-256


def _flip_byte_in_data(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor's bytes, past the JSON header
    path.write_bytes(bytes(data))


RUN_CASES = {
    "run_missing_config": (
        lambda r: (r / ckpt.CONFIG).unlink(),
        r"config\.json: missing; .* is not a vaelab run folder",
    ),
    "run_missing_weights": (
        lambda r: (r / ckpt.MODEL).unlink(),
        r"model\.safetensors: missing; the run folder is incomplete",
    ),
    "run_config_not_json": (lambda r: (r / ckpt.CONFIG).write_text("{ not json"), r"config\.json: not valid JSON"),
    "run_config_not_a_run_config": (
        lambda r: (r / ckpt.CONFIG).write_text("[1, 2]"),
        r"config\.json: not a vaelab run config",
    ),
    "run_config_unknown_key": (
        lambda r: _alter_json(r / ckpt.CONFIG, lambda d: d["model"].update(depth=3)),
        r"\[model\]: unknown key\(s\) \['depth'\]",
    ),
    "run_config_wrong_type": (
        lambda r: _alter_json(r / ckpt.CONFIG, lambda d: d["model"].update(latent_dim="2")),
        r"\[model\] latent_dim must be an integer, got '2'",
    ),
    "run_config_disagrees_with_tensors": (
        lambda r: _alter_json(r / ckpt.CONFIG, lambda d: d["model"].update(latent_dim=5)),
        r"model\.safetensors: tensor 'encoder\.head\.weight' is torch\.float32 \(4, 16\) but config\.json builds "
        r"torch\.float32 \(10, 16\); the weights belong to another architecture",
    ),
    "run_weights_truncated": (
        lambda r: (r / ckpt.MODEL).write_bytes((r / ckpt.MODEL).read_bytes()[:100]),
        r"model\.safetensors: not a valid safetensors file",
    ),
    "run_weights_bytes_altered": (
        lambda r: _flip_byte_in_data(r / ckpt.MODEL),
        r"model\.safetensors: its contents do not match the SHA-256 recorded",
    ),
    "run_weights_dtype_changed": (
        lambda r: _to_float64(r / ckpt.MODEL),
        r"tensor 'encoder\.body\.0\.weight' is torch\.float64 \(16, 64\) but config\.json builds torch\.float32 "
        r"\(16, 64\)",
    ),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_folder(case, run_copy, cli_error):
    alter, pattern = RUN_CASES[case]
    alter(run_copy)
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError, match=pattern):
        vaelab.load(run_copy)
    cli_error(["eval", run_copy, "--k", "5", "--limit", "10"], pattern)
    cli_error(["sample", run_copy, "-n", "4"], pattern)
    assert snapshot(run_copy) == before  # no eval.json, no samples.png, nothing else


def test_weights_from_another_architecture(runs, run_copy, cli_error):
    shutil.copy(runs / "other" / ckpt.MODEL, run_copy / ckpt.MODEL)
    before = snapshot(run_copy)
    pattern = (
        r"model\.safetensors: tensor 'encoder\.body\.0\.weight' is torch\.float32 \(12, 64\) but config\.json "
        r"builds torch\.float32 \(16, 64\); the weights belong to another architecture"
    )
    cli_error(["encode", run_copy, "-o", run_copy.parent / "z.npy"], pattern)
    assert snapshot(run_copy) == before and not (run_copy.parent / "z.npy").exists()


def test_resume_with_a_checkpoint_from_another_architecture(runs, run_copy, cli_error):
    shutil.copy(runs / "other" / ckpt.CHECKPOINT, run_copy / ckpt.CHECKPOINT)
    before = snapshot(run_copy)
    cli_error(
        ["train", "--resume", run_copy, "-q", "--epochs", "2"],
        r"checkpoint\.safetensors: tensor 'encoder\.body\.0\.weight' is torch\.float32 \(12, 64\) but "
        r"config\.json builds torch\.float32 \(16, 64\); the weights belong to another architecture",
    )
    assert snapshot(run_copy) == before


def test_resume_with_an_edited_training_state(run_copy, cli_error):
    """The JSON state inside checkpoint.safetensors is edited (step + 100): the SHA-256 catches it."""
    path = run_copy / ckpt.CHECKPOINT
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    state = json.loads(header["__metadata__"]["state"])
    state["step"] += 100
    header["__metadata__"]["state"] = json.dumps(state)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)  # safetensors pads its header to 8 bytes
    path.write_bytes(len(new).to_bytes(8, "little") + new + data[8 + n :])
    before = snapshot(run_copy)
    cli_error(
        ["train", "--resume", run_copy, "-q", "--epochs", "2"],
        r"checkpoint\.safetensors: its contents do not match the SHA-256 recorded when it was written",
    )
    assert snapshot(run_copy) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, cli_error):
    cli_error(["train", "--resume", tmp_path / "nothing"], r"nothing: no such run folder")
    (tmp_path / "empty").mkdir()
    cli_error(["train", "--resume", tmp_path / "empty"], r"empty/config\.json: missing")
    assert snapshot(tmp_path / "empty") == {}


def test_resume_cannot_change_what_the_run_computes(run_copy, cli_error):
    before = snapshot(run_copy)
    cli_error(
        ["train", "--resume", run_copy, "--latent-dim", "8"],
        r"--resume continues a run as it was configured; cannot change \['model\.latent_dim'\]",
    )
    assert snapshot(run_copy) == before


def test_out_that_already_holds_a_run(run_copy, npz_dataset, cli_error):
    before = snapshot(run_copy)
    cli_error(
        ["train", "--preset", "tiny", "--dataset", npz_dataset, "--out", run_copy],
        r"already holds a run; use --resume .* to continue it, --overwrite to replace it",
    )
    assert snapshot(run_copy) == before


SHIPPED_RECORD = '{"row": "burda-vae", "preset": "burda-vae", "nll": 88.58}'  # reproduce.py's, in short
SHIPPED_CASES = {
    "shipped_sample": (["sample", "RUN"], r"writing samples.png into it would change it; give -o FILE"),
    "shipped_reconstruct": (["reconstruct", "RUN"], r"writing reconstructions.png into it would change it"),
    "shipped_traverse": (["traverse", "RUN"], r"writing traversals.png into it would change it"),
    "shipped_plot": (
        ["plot", "RUN"],
        r"redrawing its pictures would change it; work on a copy without the result.json: cp -r \S+ run-copy && rm run-copy/result.json$",
    ),
    "shipped_train_prior": (["train-prior", "RUN"], r"fitting its code prior would change it; work on a copy without"),
    "shipped_resume": (["train", "--resume", "RUN"], r"--resume would change it; train its preset into a folder"),
    "shipped_out": (
        ["train", "--preset", "tiny", "--dataset", "DATA", "--out", "RUN"],
        r"training into it would change it; give another --out$",
    ),
    "shipped_overwrite": (
        ["train", "--preset", "tiny", "--dataset", "DATA", "--out", "RUN", "--overwrite"],
        r"training into it would change it; give another --out$",
    ),
}


@pytest.mark.parametrize("case", sorted(SHIPPED_CASES))
def test_a_shipped_models_folder_is_never_written(case, run_copy, npz_dataset, cli_error):
    """zoo/ROW (its result.json marks it) is the record of a reproduction row: a command that would
    write into it stops, names the option or the copy that writes elsewhere, and leaves it as it was."""
    (run_copy / "result.json").write_text(SHIPPED_RECORD)
    before = snapshot(run_copy)
    args, pattern = SHIPPED_CASES[case]
    args = [str(run_copy) if a == "RUN" else npz_dataset if a == "DATA" else a for a in args]
    line = cli_error(args, r"is a shipped model \(its result.json records its row\): " + pattern)
    assert line.startswith("vaelab: error: DIR/run is a shipped model"), line
    assert snapshot(run_copy) == before


def test_the_library_does_not_train_into_a_shipped_model(run_copy, tiny_splits, tiny_cfg):
    """vaelab.fit(..., run_dir=zoo/ROW), with or without resume, refuses before writing anything."""
    from vaelab.models import VAE

    (run_copy / "result.json").write_text(SHIPPED_RECORD)
    before = snapshot(run_copy)
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"is a shipped model .*training into it would change it; train into"):
            vaelab.fit(VAE(tiny_cfg.model), tiny_splits, tiny_cfg, run_copy, resume=resume, progress=False)
    assert snapshot(run_copy) == before


def test_a_shipped_model_evaluates_without_recording_and_pictures_go_to_o(run_copy, tmp_path, capsys):
    """Evaluating a shipped model prints its numbers and leaves its eval.json (the row's record) as it
    was; a picture given -o is drawn, into -o."""
    (run_copy / "result.json").write_text(SHIPPED_RECORD)
    before = snapshot(run_copy)
    code, out, err = run_cli(["eval", str(run_copy), "--k", "2", "--threads", "1"], capsys)
    assert code == 0 and "ELBO" in out, err
    assert f"not saved: {run_copy} is a shipped model, whose eval.json records its row" in out
    # a benchmark driver's result.json (iwae_table.py, time_to_quality.py) names no row: still a run of one's own
    (run_copy / "result.json").write_text('{"name": "iwae-k5", "nll": 85.0}')
    code, out, err = run_cli(["eval", str(run_copy), "--k", "2", "--threads", "1"], capsys)
    assert code == 0 and f"saved in {run_copy / 'eval.json'}" in out, err
    (run_copy / "eval.json").unlink()
    (run_copy / "result.json").write_text(SHIPPED_RECORD)
    png = tmp_path / "s.png"
    code, out, err = run_cli(["sample", str(run_copy), "-n", "4", "-o", str(png), "--threads", "1"], capsys)
    assert code == 0 and png.is_file(), err
    assert snapshot(run_copy) == before


def test_weights_name_cannot_leave_the_run_folder(run_copy):
    for bad in ("../run/model.safetensors", "/etc/passwd", "..", ""):
        with pytest.raises(CheckpointError, match="give a file name inside the run folder"):
            vaelab.load(run_copy, weights=bad)


# -- labels of conditional models -----------------------------------------------------------------


@pytest.mark.parametrize(
    "label, pattern",
    [
        pytest.param("4", r"--label 4 is out of range: this model knows labels 0\.\.3", id="label_too_large"),
        pytest.param("-1", r"--label -1 is out of range: this model knows labels 0\.\.3", id="label_negative"),
        pytest.param(None, r"this model is conditional: pass --label in 0\.\.3", id="label_missing"),
    ],
)
def test_label_of_a_conditional_model(label, pattern, runs, tmp_path, cli_error):
    out = tmp_path / "s.png"
    cli_error(["sample", runs / "cond", "-o", out] + (["--label", label] if label else []), pattern)
    assert not out.exists()


def test_label_for_an_unconditional_model(runs, tmp_path, cli_error):
    cli_error(
        ["sample", runs / "plain", "-o", tmp_path / "s.png", "--label", "1"],
        r"--label 1: this model is not conditional; leave --label out",
    )
    assert not (tmp_path / "s.png").exists()


def test_library_rejects_out_of_range_labels(runs):
    model = vaelab.load(runs / "cond")
    with pytest.raises(ConfigError, match=r"label 7 is out of range: this model knows labels 0\.\.3"):
        model.sample(3, 7)
    with pytest.raises(ConfigError, match=r"label -2 is out of range"):
        model.encode(torch.zeros(2, 1, 8, 8), torch.tensor([0, -2]))


def test_conditional_training_on_unlabelled_data(tmp_path, cli_error):
    np.savez(tmp_path / "u.npz", x=GOOD)
    cli_error(
        ["train", "--preset", "tiny", "--dataset", tmp_path / "u.npz", "--conditional", "--out", tmp_path / "out"],
        r"--conditional needs labelled data; u has no labels",
    )
    assert not (tmp_path / "out").exists()


# -- output paths and full disks --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, pattern",
    [
        pytest.param(
            ["sample", "RUN", "-o", "DIR/missing/s.png"],
            r"-o DIR/missing/s\.png: folder DIR/missing does not exist; create it \(mkdir -p DIR/missing\) or write elsewhere",
            id="sample_out_folder_missing",
        ),
        pytest.param(
            ["sample", "RUN", "-o", "DIR/s.txt"],
            r"-o DIR/s\.txt: use a \.png, \.pdf or \.svg file name",
            id="sample_out_bad_suffix",
        ),
        pytest.param(
            ["sample", "RUN", "--npy", "DIR/s.csv"],
            r"--npy DIR/s\.csv: use a \.npy file name",
            id="sample_npy_bad_suffix",
        ),
        pytest.param(
            ["encode", "RUN", "-o", "DIR/z.txt"],
            r"-o DIR/z\.txt: use a \.npy or \.csv file name",
            id="encode_out_bad_suffix",
        ),
        pytest.param(
            ["encode", "RUN", "-o", "DIR/missing/z.npy"],
            r"-o DIR/missing/z\.npy: folder DIR/missing does not exist; create it \(mkdir -p DIR/missing\)",
            id="encode_out_folder_missing",
        ),
        pytest.param(["eval", "RUN", "--k", "0"], r"k must be a positive integer, got 0", id="eval_k_zero"),
        pytest.param(
            ["eval", "RUN", "--limit", "0", "--k", "2"],
            r"--limit must be a positive integer, got 0",
            id="eval_limit_zero",
        ),
        pytest.param(["sample", "RUN", "-n", "0"], r"-n must be a positive integer, got 0", id="sample_n_zero"),
    ],
)
def test_bad_command_arguments(args, pattern, run_copy, tmp_path, cli_error):
    before = snapshot(tmp_path)
    args = [a.replace("RUN", str(run_copy)).replace("DIR", str(tmp_path)) for a in args]
    cli_error(args, pattern.replace("DIR", re.escape(str(tmp_path))))
    assert snapshot(tmp_path) == before


def test_out_under_a_regular_file(tmp_path, npz_dataset, cli_error):
    (tmp_path / "file").write_text("I am a file")
    cli_error(
        ["train", "--preset", "tiny", "--dataset", npz_dataset, "--out", tmp_path / "file" / "run"],
        r"--out .*file/run: cannot write there \(Not a directory\); choose a writable folder",
    )
    assert (tmp_path / "file").read_text() == "I am a file"


def test_out_under_proc(npz_dataset, cli_error):
    cli_error(
        ["train", "--preset", "tiny", "--dataset", npz_dataset, "--out", "/proc/vaelab-run"],
        r"--out /proc/vaelab-run: cannot write there \(.*\); choose a writable folder",
    )
    assert not Path("/proc/vaelab-run").exists()


def _disk_full(monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)


def test_disk_full_while_writing_eval_json(run_copy, monkeypatch, cli_error):
    before = snapshot(run_copy)
    _disk_full(monkeypatch)
    cli_error(
        ["eval", run_copy, "--k", "5", "--limit", "10"],
        r"cannot write .*eval\.json \(No space left on device\); nothing was changed there",
    )
    assert snapshot(run_copy) == before  # no eval.json, no temporary file


def test_disk_full_while_training(tmp_path, npz_dataset, monkeypatch, cli_error):
    _disk_full(monkeypatch)
    out = tmp_path / "out"
    cli_error(
        ["train", "--preset", "tiny", "--dataset", npz_dataset, "--out", out, "-q", "--epochs", "1"],
        r"cannot write .*config\.json \(No space left on device\)",
    )
    assert snapshot(out) == {}  # the folder may exist (it was created to be written to) but holds nothing


def test_disk_full_in_the_library_is_a_typed_oserror(tmp_path, monkeypatch):
    model = VAE_small()
    _disk_full(monkeypatch)
    with pytest.raises(StorageError) as e:
        ckpt.save_weights(tmp_path / ckpt.MODEL, model)
    assert isinstance(e.value, OSError) and isinstance(e.value, VaelabError) and e.value.errno == errno.ENOSPC
    assert snapshot(tmp_path) == {}


def VAE_small():
    from vaelab.models import VAE

    return VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))


# -- issue 14, item 6: what a new user hit ----------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_device_cuda_without_cuda_fails_before_printing_or_writing(tmp_path, npz_dataset, capsys, cli_error):
    out = tmp_path / "run"
    line = cli_error(
        ["train", "--preset", "tiny", "--dataset", npz_dataset, "--device", "cuda", "--out", out],
        r"--device cuda: no CUDA device is available here; use --device cpu or auto",
    )
    assert not out.exists()  # no empty run folder left behind
    assert "vaelab 0.1.0" not in line  # the header was not printed first


def test_run_folder_of_a_newer_format_names_the_version_and_the_upgrade(run_copy, cli_error):
    _alter_json(run_copy / ckpt.CONFIG, lambda d: d.update(format="vaelab-run-2", versions={"vaelab": "0.9.0"}))
    pattern = (
        r"config\.json: written by vaelab 0\.9\.0 in format 'vaelab-run-2'; this vaelab 0\.1\.0 reads "
        r"'vaelab-run-1'\. Upgrade vaelab \(pip install --upgrade vaelab\) to read this run"
    )
    with pytest.raises(CheckpointError, match=pattern):
        vaelab.load(run_copy)
    cli_error(["eval", run_copy, "--k", "5"], pattern)


def test_config_of_a_newer_vaelab_in_the_same_format_loads_with_a_warning(run_copy, caplog):
    _alter_json(run_copy / ckpt.CONFIG, lambda d: d["versions"].update(vaelab="0.10.0"))
    vaelab.load(run_copy)
    assert "written by vaelab 0.10.0, newer than this vaelab 0.1.0" in caplog.text
    caplog.clear()
    _alter_json(run_copy / ckpt.CONFIG, lambda d: d["versions"].update(vaelab="0.1.0"))
    vaelab.load(run_copy)
    assert "newer" not in caplog.text


def test_resume_of_a_complete_run_says_how_to_extend_it(run_copy, cli_error):
    before = snapshot(run_copy)
    cli_error(
        ["train", "--resume", run_copy, "--epochs", "1", "-q"],
        r"the run is already complete \(1 of 1 epochs\); to train further, pass --epochs N with N above 1",
    )
    assert snapshot(run_copy) == before  # no pictures redrawn, no config rewritten


@pytest.mark.parametrize(
    "args, pattern",
    [
        pytest.param(
            ["train", "--epoch", "5"], r"unexpected argument '--epoch'; did you mean --epochs\?", id="flag_typo"
        ),
        pytest.param(
            ["train", "--train.epoch=5"], r"unknown key\(s\) \['epoch'\] \(did you mean 'epochs'\?\)", id="key_typo"
        ),
        pytest.param(
            ["eval", "RUN", "--kk", "5"], r"No such option '--kk'\. Did you mean '--k'\?", id="eval_flag_typo"
        ),
    ],
)
def test_typos_get_the_close_match(args, pattern, run_copy, cli_error):
    cli_error([a.replace("RUN", str(run_copy)) for a in args], pattern)


def test_a_garbage_npz_is_named_as_not_a_zip_file(tmp_path, cli_error):
    bad = tmp_path / "g.npz"
    bad.write_bytes(b"x")
    cli_error(
        ["train", "--preset", "tiny", "--dataset", bad, "--out", tmp_path / "run"],
        r"g\.npz: not a valid \.npz \(zip\) file \(it starts with b'x', not PK\)",
    )
    assert not (tmp_path / "run").exists()


def test_a_dataset_typo_gets_the_close_match(tmp_path, cli_error):
    cli_error(
        ["train", "--preset", "tiny", "--dataset", "minst", "--out", tmp_path / "run"],
        r"--dataset minst: no such file or folder; did you mean mnist\?",
    )
