"""Speed and numbers of two checkouts of vaelab on the same job, through the public API.

    git worktree add /tmp/old 639ff5d
    for i in 1 2 3; do for src in /tmp/old/src src; do python benchmarks/compare_versions.py $src 1; done; done

Trains the seed preset on the first 20,000 MNIST images for 3 epochs with THREADS threads using
the vaelab found in SRC, and prints each epoch's samples/s and the test ELBO (which must agree to
the last digit when a change is meant to leave the maths alone). Run the two versions interleaved.
"""

from __future__ import annotations

import json
import sys

src, threads = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, src)

import torch  # noqa: E402

import vaelab  # noqa: E402

try:
    from vaelab.config_io import replace
except ImportError:  # a checkout from before config_io.py (#22)
    from vaelab.config import replace

if not vaelab.__file__.startswith(str(__import__("pathlib").Path(src).resolve())):
    raise SystemExit(f"imported {vaelab.__file__}, not the vaelab in {src}")
cfg = replace(vaelab.load_preset("seed"), {"data.limit": 20000, "train.epochs": 3, "train.threads": threads})
splits = vaelab.load_splits(cfg.data)
torch.manual_seed(0)
result = vaelab.fit(vaelab.VAE(cfg.model), splits, cfg, progress=False)
print(
    json.dumps(
        {
            "src": src,
            "samples_per_s": [round(r["samples_per_s"]) for r in result.metrics],
            "test_elbo": result.test.elbo,
        }
    )
)
