"""How fast vaelab trains and evaluates, next to the machine's limit and to the usual ways of writing it.

One command measures, interleaved (A B C A B C ...) so that machine drift cancels out of the ratios:

  limit     the matrix multiplies of one training step alone (forward and backward of every layer,
            the exact shapes, strides and thread settings of the preset and batch), replayed from a
            recording of a real step into preallocated outputs: what no training loop can beat;
  fit       vaelab's own fit(): samples/s over a (time-boxed) epoch, and one full MNIST epoch;
  loader    the typical PyTorch loop: a per-sample Dataset converting one uint8 image to float (as
            torchvision's ToTensor does), a DataLoader, plain Adam, `loss.item()` per step;
  keras     the tutorial's code: the same model in Keras 3 (KERAS_BACKEND=torch, functional API,
            model.fit(batch_size=50)); skipped with a note when keras is not installed
            (`pip install -e '.[bench]'`);
  eval      importance-sampled NLL with K=5000 (vaelab.evaluate.log_likelihood), images/s, and
            the matrix multiplies of the same computation alone.

Every measurement runs in its own subprocess, which also gives its peak resident memory
(ru_maxrss). Scaling rows show how time grows with the dataset size and with K.

    python benchmarks/speed.py --quick                  # a few seconds per row: check that it runs
    python benchmarks/speed.py --threads 1,2            # the full CPU benchmark (idle machine)
    python benchmarks/speed.py --threads 1,2 --busy     # the same with one core kept busy
    python benchmarks/speed.py --device cuda --gpu      # GPU: seed preset at batch 1024, MNIST epoch

See benchmarks/README.md for what each row means and docs/speed.md for the findings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()

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


# =============================================================================================
# Child side: one measurement per process
# =============================================================================================


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024


def set_threads(threads: str) -> int:
    """Apply a thread setting: an integer, "default" (vaelab's default, the usable cores) or "auto"
    (vaelab.cpu.auto_threads: the usable cores less the busy ones)."""
    import torch

    from vaelab.cpu import resolve_threads

    n = resolve_threads(None if threads == "default" else threads if threads == "auto" else int(threads))
    torch.set_num_threads(n)
    return n


def load_mnist_or_synthetic(n_train: int | None = None) -> tuple[Any, str]:
    """MNIST's splits (50k/10k/10k) from the local cache, else a synthetic stand-in of the same shape."""
    from vaelab.config import DataConfig
    from vaelab.data import load_splits

    try:
        splits = load_splits(DataConfig(dataset="mnist", limit=n_train))
        return splits, "MNIST"
    except Exception as e:  # noqa: BLE001 - offline without a cache: time synthetic images instead
        print(f"note: MNIST unavailable ({e}); timing synthetic images", file=sys.stderr)
        return synthetic_splits(n_train or 50_000), "synthetic"


def synthetic_splits(n: int, seed: int = 0) -> Any:
    """n random uint8 28x28 images for training (+ 1000 each for val/test). Cost does not depend on pixels."""
    import torch

    from vaelab.data import DataSplits, ImageData

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + 2000, 1, 28, 28), dtype=torch.uint8, generator=g)
    return DataSplits("synthetic", ImageData(x[:n]), ImageData(x[n : n + 1000]), ImageData(x[n + 1000 :]), 0)


def run_cfg(job: dict[str, Any]) -> Any:
    from vaelab.config import load_preset, replace

    over = {
        "train.epochs": 1,
        "train.batch_size": job["batch"],
        "train.device": job["device"],
        "train.threads": None
        if job["threads"] == "default"
        else job["threads"]
        if job["threads"] == "auto"
        else int(job["threads"]),
    }
    over.update(job.get("overrides", {}))
    return replace(load_preset(job["preset"]), over)


def timed_loop(fn: Callable[[], Any], seconds: float, sync: Callable[[], None]) -> tuple[int, float]:
    """Call fn until `seconds` have passed (at least 3 times); (calls, elapsed seconds)."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3:
            sync()
            dt = time.perf_counter() - t0
            if dt >= seconds:
                return n, dt


def device_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


# -- the limit: record the matrix multiplies of a real step, replay them alone -------------------

MATMUL_OPS = {
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "addbmm",
    "mv",
    "addmv",
    "dot",
    "_addmm_activation",
    "convolution",
    "_convolution",
    "convolution_backward",
    "mkldnn_convolution",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "_mkldnn_convolution",
}


@dataclass(frozen=True)
class TensorSpec:
    """What the replay needs of a recorded operand (a plain class: pytree leaves, unlike tuples)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    device: str


def record_matmuls(fn: Callable[[], Any]) -> list[tuple[Any, tuple, dict]]:
    """The matrix-multiply calls (aten op, args, kwargs) that fn makes, forward and backward.

    Tensors are kept as (shape, stride, dtype, device) so that the replay has the same layouts
    (a transposed operand is a different, sometimes slower, matrix multiply).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    def spec(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return TensorSpec(tuple(a.shape), tuple(a.stride()), a.dtype, str(a.device))
        return a

    calls: list[tuple[Any, tuple, dict]] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            if func.overloadpacket.__name__ in MATMUL_OPS:
                calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
            return func(*args, **kwargs)

    with Recorder():
        fn()
    return calls


def replayer(calls: list[tuple[Any, tuple, dict]]) -> tuple[Callable[[], None], float]:
    """A function running the recorded matrix multiplies on fresh operands, into preallocated
    outputs where the op has an out= form, and their FLOPs per call."""
    import torch
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import FlopCounterMode

    def make(a: Any) -> Any:
        if isinstance(a, TensorSpec):
            t = torch.empty_strided(a.shape, a.stride, dtype=a.dtype, device=a.device)
            return t.uniform_(-1, 1) if t.is_floating_point() else t.zero_()
        return a

    prepared, made = [], {}
    for func, args, kwargs in calls:
        key = repr((func, args, kwargs))  # identical calls (the chunks of an evaluation) share operands
        if key not in made:
            a, k = tree_map(make, args), tree_map(make, kwargs)
            out_op = getattr(func.overloadpacket, "out", None)
            result = func(*a, **k)
            if out_op is not None and isinstance(result, torch.Tensor):
                made[key] = (out_op, a, {**k, "out": result})
            else:
                made[key] = (func, a, k)
        prepared.append(made[key])

    def run() -> None:
        for f, a, k in prepared:
            f(*a, **k)

    with FlopCounterMode(display=False) as counter:
        run()
    return run, float(counter.get_total_flops())


def train_step_fn(job: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    """One training step of the job's preset and batch, written with vaelab's pieces."""
    import torch

    from vaelab.models import build_model
    from vaelab.objectives import training_objective

    cfg = run_cfg(job)
    dev = torch.device(job["device"])
    model = build_model(cfg.model).to(dev)
    b, (c, h, w) = job["batch"], cfg.model.input_shape
    x = torch.rand(b, c, h, w, device=dev)
    tc = cfg.train
    eps = torch.randn(tc.m * tc.k, b, model.noise_dim, device=dev)

    def step() -> None:
        draws = model(x, None, eps, tc.estimator != "reparam")
        objective = training_objective(draws, tc.objective, tc.estimator, tc.m, 1.0, tc.ciwae_beta)[0]
        (-objective.mean()).backward()

    return step, model


def job_limit(job: dict[str, Any]) -> dict[str, Any]:
    """The matmuls of one step alone; with `optimizer`, followed by vaelab's (fused) Adam step on the
    model's parameters: the least any Adam training step must do."""
    import torch

    from vaelab.train import make_optimizer

    step, model = train_step_fn(job)
    step()
    run, flops = replayer(record_matmuls(step))
    if job.get("optimizer"):
        opt = make_optimizer(model, run_cfg(job).train, torch.device(job["device"]))
        matmuls = run

        def run() -> None:
            matmuls()
            opt.step()

    n, dt = timed_loop(run, job["seconds"], device_sync(job["device"]))
    return {
        "rate": n * job["batch"] / dt,
        "unit": "samples/s",
        "gflops": n * flops / dt / 1e9,
        "flops_per_sample": flops / job["batch"],
    }


def job_fit(job: dict[str, Any]) -> dict[str, Any]:
    """vaelab.fit, as a user calls it. With `seconds`, the epoch is time-boxed (fit's max_minutes)
    and the rate is fit's own samples/s of that epoch; with `full_epoch`, one whole epoch."""
    import torch

    from vaelab.config import replace
    from vaelab.data import DataSplits
    from vaelab.models import build_model
    from vaelab.train import fit

    if job.get("synthetic"):
        splits, source = synthetic_splits(job["synthetic"]), "synthetic"
    else:
        splits, source = load_mnist_or_synthetic(job.get("images"))
    if not job.get("full_epoch"):  # validation is not what is timed: keep it short
        splits = DataSplits(
            splits.name, splits.train, splits.val.subset(500), splits.test.subset(500), splits.num_classes
        )
    cfg = run_cfg(job)
    torch.manual_seed(0)
    model = build_model(cfg.model)  # one layer or a hierarchy alike
    # one-time costs (allocator, kernel selection, torch.compile) on the same model and code
    fit(model, splits, replace(cfg, {"train.max_minutes": 0.3 / 60}), progress=False)
    if not job.get("full_epoch"):
        cfg = replace(cfg, {"train.max_minutes": job["seconds"] / 60})
    t0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = fit(model, splits, cfg, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    row = result.metrics[-1]
    seen = result.steps * cfg.train.batch_size
    out = {
        "rate": row["samples_per_s"],
        "unit": "samples/s",
        "epoch_seconds": row["epoch_seconds"],
        "train_images": len(splits.train),
        "data": source,
        "fit_wall_seconds": wall,
        "threads_used": torch.get_num_threads(),
        # samples per CPU-second of the whole fit() call: robust to other processes, for A/B runs
        "samples_per_cpu_s": seen / cpu,
        "page_faults_per_step": faults / max(1, result.steps),
    }
    if result.test is not None:
        out["test_elbo"] = result.test.elbo
    if job["device"].startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def job_fit_syncs(job: dict[str, Any]) -> dict[str, Any]:
    """CUDA only: host synchronisations during one epoch (torch.cuda sync debug mode), vs steps."""
    import warnings

    import torch

    from vaelab.models import VAE
    from vaelab.train import fit

    splits, _ = load_mnist_or_synthetic(job.get("images"))
    cfg = run_cfg(job)
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(VAE(cfg.model), splits, cfg, progress=False)
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {
        "rate": result.metrics[-1]["samples_per_s"],
        "unit": "samples/s",
        "steps": result.steps,
        "syncs": len(syncs),
        "sync_examples": sorted(set(syncs))[:3],
    }


# -- the typical PyTorch user loop ---------------------------------------------------------------


def job_loader(job: dict[str, Any]) -> dict[str, Any]:
    """pytorch/examples' VAE loop, at the seed preset's sizes: per-sample Dataset, DataLoader, Adam."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    splits, source = load_mnist_or_synthetic(job.get("images"))
    images = splits.train.images.numpy()[:, 0]  # (N, 28, 28) uint8, as torchvision's MNIST holds them
    hidden, latent = 512, 2

    class ImageDataset(Dataset):
        def __init__(self, images):  # noqa: ANN001
            self.images = images

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int):  # noqa: ANN204 - ToTensor: HxW uint8 -> 1xHxW float in [0, 1]
            return torch.from_numpy(self.images[i]).unsqueeze(0).float().div(255), 0

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc21, self.fc22 = (
                nn.Linear(784, hidden),
                nn.Linear(hidden, latent),
                nn.Linear(hidden, latent),
            )
            self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

        def forward(self, x):  # noqa: ANN001, ANN201
            h = F.relu(self.fc1(x.view(-1, 784)))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    def loss_function(recon_x, x, mu, logvar):  # noqa: ANN001, ANN202
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    device = torch.device(job["device"])
    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(ImageDataset(images), batch_size=job["batch"], shuffle=True)
    deadline, seen, train_loss = None, 0, 0.0
    t0 = 0.0
    for i, (data, _) in enumerate(loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        loss = loss_function(recon, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        if i == 4:  # warm-up steps done: start the clock
            t0, seen = time.perf_counter(), 0
            deadline = t0 + job["seconds"]
        elif deadline is not None:
            seen += len(data)
            if time.perf_counter() >= deadline:
                break
    return {"rate": seen / (time.perf_counter() - t0), "unit": "samples/s", "data": source}


# -- the tutorial's own code: Keras 3 on the torch backend ---------------------------------------


def job_keras(job: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
        from keras import layers, ops
    except ImportError:
        return {"skipped": "keras is not installed: pip install -e '.[bench]' (keras>=3)"}
    if keras.backend.backend() != "torch":
        return {"skipped": f"KERAS_BACKEND is {keras.backend.backend()!r}, not 'torch'"}
    splits, source = load_mnist_or_synthetic(job.get("images"))
    x = splits.train.images.numpy().reshape(len(splits.train), -1).astype("float32") / 255.0  # the tutorial

    class Sampling(layers.Layer):
        """z = z_mean + exp(z_log_var / 2) * eps, adding the KL term to the model's losses."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):  # noqa: ANN001, ANN201
            z_mean, z_log_var = inputs
            kl = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
            self.add_loss(ops.mean(kl))
            eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * eps

    inputs = keras.Input(shape=(784,))
    h = layers.Dense(512, activation="relu")(inputs)
    z_mean, z_log_var = layers.Dense(2)(h), layers.Dense(2)(h)
    z = Sampling()([z_mean, z_log_var])
    outputs = layers.Dense(784, activation="sigmoid")(layers.Dense(512, activation="relu")(z))
    vae = keras.Model(inputs, outputs)
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=lambda x_true, x_pred: 784 * keras.losses.binary_crossentropy(x_true, x_pred),
    )

    n_warm = min(len(x), 20 * job["batch"])
    t0 = time.perf_counter()
    vae.fit(x[:n_warm], x[:n_warm], batch_size=job["batch"], epochs=1, verbose=0)  # builds the step
    guess = n_warm / (time.perf_counter() - t0)
    n = int(min(len(x), max(n_warm, guess * job["seconds"] * 1.2)))
    t0 = time.perf_counter()
    vae.fit(x[:n], x[:n], batch_size=job["batch"], epochs=1, verbose=0)
    return {"rate": n / (time.perf_counter() - t0), "unit": "samples/s", "data": source, "keras": keras.__version__}


# -- evaluation: importance-sampled NLL ----------------------------------------------------------


def eval_setup(job: dict[str, Any]) -> tuple[Any, Any, Any]:
    import torch

    from vaelab.config import EvalConfig, load_preset
    from vaelab.cpu import keep_freed_memory
    from vaelab.models import VAE

    keep_freed_memory()  # as `vaelab eval` does
    torch.manual_seed(0)
    model = VAE(load_preset(job["preset"]).model).to(job["device"]).eval()  # cost does not depend on weights
    ecfg = EvalConfig(k=job["k"], batch_size=min(job["images"], EvalConfig.batch_size))
    splits, _ = load_mnist_or_synthetic(1000)
    return model, ecfg, splits.test.subset(job["images"])


def job_eval(job: dict[str, Any]) -> dict[str, Any]:
    from vaelab.evaluate import log_likelihood

    model, ecfg, data = eval_setup(job)
    log_likelihood(model, data.subset(ecfg.batch_size), ecfg)  # warm-up: one batch
    t0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    est = log_likelihood(model, data, ecfg)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {
        "rate": len(data) / dt,
        "unit": "images/s",
        "samples_per_s": len(data) * job["k"] / dt,
        "images": len(data),
        "nll": est.nll,
        "images_per_cpu_s": len(data) / cpu,
        "page_faults_per_image": faults / len(data),
    }


def job_eval_limit(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from vaelab.data import to_float
    from vaelab.evaluate import log_likelihood_batch

    model, ecfg, data = eval_setup(job)
    x = to_float(data.images[: ecfg.batch_size]).to(job["device"])
    g = torch.Generator(job["device"]).manual_seed(0)
    calls = record_matmuls(lambda: log_likelihood_batch(model, x, ecfg.k, ecfg.chunk, g))
    run, flops = replayer(calls)
    n, dt = timed_loop(run, job["seconds"], device_sync(job["device"]))
    return {"rate": n * len(x) / dt, "unit": "images/s", "gflops": n * flops / dt / 1e9}


JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "limit": job_limit,
    "fit": job_fit,
    "fit-syncs": job_fit_syncs,
    "loader": job_loader,
    "keras": job_keras,
    "eval": job_eval,
    "eval-limit": job_eval_limit,
}


def child(job: dict[str, Any]) -> None:
    threads = set_threads(job["threads"])
    out = JOBS[job["kind"]](job)
    out.update(threads=threads, peak_mb=peak_rss_mb())
    print("RESULT " + json.dumps(out))


# =============================================================================================
# Parent side: groups of contenders, measured in interleaved rounds
# =============================================================================================


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


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONWARNINGS="ignore", **job.get("env", {}))
    cmd = [sys.executable, str(HERE), "--child", json.dumps(job)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {p.returncode}: {tail}"}


def measure(group: Group, rounds: int, timeout: float, log: Callable[[str], None]) -> None:
    """rounds x (every row once, in order): A B C A B C ..., so that drift hits every row alike."""
    for r in range(rounds):
        for row in group.rows:
            if any("skipped" in res for res in row.results):
                continue  # nothing changes in the next rounds
            res = run_child(row.job, timeout)
            row.results.append(res)
            shown = f"{res['rate']:,.0f} {res['unit']}" if "rate" in res else res.get("skipped") or res.get("error")
            log(f"  round {r + 1}/{rounds}  {row.label:<48} {shown}")


class Burner:
    """`--busy`: a process spinning on one core (pinned to the last core when possible) for the
    whole measurement, as a browser, a second training run or another user would."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.proc = enabled, None

    def __enter__(self) -> Burner:
        if self.enabled:
            code = (
                "import os\ntry: os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\n"
                "except (AttributeError, OSError): pass\nwhile True: pass\n"
            )
            self.proc = subprocess.Popen([sys.executable, "-c", code])
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def machine_description(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vaelab.cpu import default_threads

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    cfg = torch.__config__.show()
    blas = "MKL" if "USE_MKL=ON" in cfg else ("OpenBLAS" if "openblas" in cfg.lower() else "other")
    desc = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas": blas,
        "torch_default_threads": torch.get_num_threads(),
        "vaelab_default_threads": default_threads(),
        "loadavg_at_start": list(os.getloadavg()),
        "busy": args.busy,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name()
    return desc


# -- the plan of a run ---------------------------------------------------------------------------


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


# -- reporting -----------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (about 1 s per row, small subsets)")
    p.add_argument(
        "--threads",
        default="default",
        help="comma-separated thread settings, each measured in turn: e.g. 1,2 or default",
    )
    p.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process throughout")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--gpu", action="store_true", help="the GPU rows: seed preset at batch 1024, MNIST epoch")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of: train,eval,scaling,family "
        "(family: the VAE-family variants at batch 100; not in the default run)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="with --only family: the variants to measure, their labels separated by ';' "
        "(default: all), e.g. 'IWAE k=5, DReG;IWAE k=5, DReG, bernoulli-ar'",
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group (default 3; 2 quick)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per timed row (default 4; 1 quick)")
    p.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="test images for the K=5000 row (default: the whole test set, 10000; 20 with --quick)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every raw result here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables here (for BENCHMARKS.md)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return
    if args.gpu and not args.device.startswith("cuda"):
        args.device = "cuda"
    rounds = args.rounds or (2 if args.quick else 3)
    desc = machine_description(args)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("machine: " + json.dumps(desc))
    md = ["## Machine", "", "```", json.dumps(desc, indent=1), "```", ""]
    raw: dict[str, Any] = {"machine": desc, "runs": []}
    summary: list[str] = []
    timeout = 900 if not args.quick else 300
    with Burner(args.busy):
        for threads in args.threads.split(","):
            threads = threads.strip()
            for g in plan(args, threads):
                log(f"== {g.title} (threads {threads})")
                measure(g, rounds, timeout, log)
                text, figs = report([g], desc, threads)
                print(text, flush=True)
                md.append(text)
                raw["runs"].append(
                    {
                        "threads": threads,
                        "group": g.title,
                        "rows": [{"label": r.label, "job": r.job, "results": r.results} for r in g.rows],
                    }
                )
                raw.setdefault("figures", {}).setdefault(threads, {}).update(figs)
            summary += target_lines(raw["figures"].get(threads, {}), threads)
    desc["loadavg_at_end"] = list(os.getloadavg())
    print("\n".join(summary))
    md += ["```", *summary, "```"]
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
