"""Peak memory (RSS) of `vaelab eval` on a freshly initialised model of a preset and random images.

    python benchmarks/eval_memory.py cifar 100 -- --k 10 --limit 100
    python benchmarks/eval_memory.py celeba64 20 -- --limit 5          # the defaults: k = 1000

Writes a run folder (config + weights, no training) under /tmp/evalmem/PRESET-N with N random 8-bit
test images, runs `vaelab eval RUN --threads 1 ARGS...` in a child process and prints its peak RSS
(ru_maxrss) in MB. BENCHMARKS.md, "Evaluation memory", has the numbers before and after issue #23.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from vaelab.config_io import load_preset, replace
from vaelab.models import build_model
from vaelab.run import checkpoint as ckpt

preset, n = sys.argv[1], int(sys.argv[2])
extra = sys.argv[sys.argv.index("--") + 1 :]
root = Path("/tmp/evalmem") / f"{preset}-{n}"
run = root / "run"
if not (run / "model.safetensors").is_file():
    run.mkdir(parents=True, exist_ok=True)
    cfg0 = load_preset(preset)
    shape = tuple(cfg0.model.input_shape)
    rng = np.random.default_rng(0)
    np.savez(
        root / "d.npz",
        x=rng.integers(0, 256, (200, *shape), dtype=np.uint8),
        x_test=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
    )
    cfg = replace(cfg0, {"data.dataset": str(root / "d.npz"), "data.image_size": None})
    torch.manual_seed(0)
    ckpt.write_config(run, cfg)
    ckpt.save_weights(run / "model.safetensors", build_model(cfg.model))
code = (
    "import resource, sys\nfrom vaelab.cli import main\nrc = 0\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
    "print(f'maxrss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} rc {rc}', file=sys.stderr)"
)
p = subprocess.run(
    [sys.executable, "-c", code, "eval", str(run), "--threads", "1", *extra], capture_output=True, text=True
)
print(p.stdout[-1500:])
print(p.stderr[-1500:])
