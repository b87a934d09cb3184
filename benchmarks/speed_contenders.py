"""What speed.py times against the limit: vaelab's own fit() and log_likelihood(), and the usual
ways of writing the same model (the typical PyTorch loop, the Keras tutorial's code). One function
per contender, each run in a child process with a job dict; each returns its rate and extras."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from speed_common import load_mnist_or_synthetic, run_cfg, synthetic_splits

# -- vaelab's fit() ------------------------------------------------------------------------------


def job_fit(job: dict[str, Any]) -> dict[str, Any]:
    """vaelab.fit, as a user calls it. With `seconds`, the epoch is time-boxed (fit's max_minutes)
    and the rate is fit's own samples/s of that epoch; with `full_epoch`, one whole epoch."""
    import torch

    from vaelab.config_io import replace
    from vaelab.data import DataSplits
    from vaelab.models import build_model
    from vaelab.training import fit

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
    from vaelab.training import fit

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

    from vaelab.config import EvalConfig
    from vaelab.config_io import load_preset
    from vaelab.data import ImageData, binarize_once
    from vaelab.models import VAE
    from vaelab.platform.cpu import keep_freed_memory

    keep_freed_memory()  # as `vaelab eval` does
    torch.manual_seed(0)
    model = VAE(load_preset(job["preset"]).model).to(job["device"]).eval()  # cost does not depend on weights
    ecfg = EvalConfig(k=job["k"], batch_size=min(job["images"], EvalConfig.batch_size))
    splits, _ = load_mnist_or_synthetic(1000)
    # binary pixels, drawn once (seed 2, as `vaelab eval` does): log_likelihood refuses a Bernoulli
    # model's NLL of grey pixels (not a density), and the cost does not depend on the pixels
    test = splits.test.subset(job["images"])
    return model, ecfg, ImageData(binarize_once(test.images, 2), test.labels)


def job_eval(job: dict[str, Any]) -> dict[str, Any]:
    from vaelab.evaluation.estimates import log_likelihood

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
