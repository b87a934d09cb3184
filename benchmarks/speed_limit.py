"""The limit speed.py measures against: the matrix multiplies of one training step (or of one
evaluation batch) recorded from a real call, replayed alone on fresh operands into preallocated
outputs. No training loop can beat it.

train_step_fn() is the one place in speed.py and its parts that calls the objectives' library API
(vaelab.objectives.training_objective): it writes one training step with vaelab's pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from speed_common import device_sync, run_cfg, timed_loop
from speed_contenders import eval_setup

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
    from vaelab.objectives.base import Step, training_objective

    cfg = run_cfg(job)
    dev = torch.device(job["device"])
    model = build_model(cfg.model).to(dev)
    b, (c, h, w) = job["batch"], cfg.model.input_shape
    x = torch.rand(b, c, h, w, device=dev)
    tc = cfg.train
    eps = torch.randn(tc.m * tc.k, b, model.noise_dim, device=dev)

    def step() -> None:
        draws = model(x, None, eps, tc.estimator != "reparam")
        objective = training_objective(draws, tc, Step(klw=1.0)).surrogate
        (-objective.mean()).backward()

    return step, model


def job_limit(job: dict[str, Any]) -> dict[str, Any]:
    """The matmuls of one step alone; with `optimizer`, followed by vaelab's (fused) Adam step on the
    model's parameters: the least any Adam training step must do."""
    import torch

    from vaelab.training import make_optimizer

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


def job_eval_limit(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from vaelab.data import to_float
    from vaelab.evaluation.estimates import log_likelihood_batch

    model, ecfg, data = eval_setup(job)
    x = to_float(data.images[: ecfg.batch_size]).to(job["device"])
    g = torch.Generator(job["device"]).manual_seed(0)
    calls = record_matmuls(lambda: log_likelihood_batch(model, x, ecfg.k, ecfg.chunk, g))
    run, flops = replayer(calls)
    n, dt = timed_loop(run, job["seconds"], device_sync(job["device"]))
    return {"rate": n * len(x) / dt, "unit": "images/s", "gflops": n * flops / dt / 1e9}
