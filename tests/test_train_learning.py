"""Learning is real: a short run on a synthetic archive beats the label-frequency baseline."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from benscale.files.shards import ShardSet
from benscale.train.metrics import frequency_baseline_map_macro
from conftest import build_dataset

#: Macro mAP points above the baseline that count as "clearly learned".
MARGIN = 0.10


@pytest.mark.slow
def test_short_run_beats_label_frequency_baseline(tmp_path: Path) -> None:
    shards = build_dataset(tmp_path / "data", "v1", patches=240, seed=5)
    out = tmp_path / "run"
    sets = {"epochs": 3, "global_batch": 16, "workers": 0, "progress": "false",
            "optimizer.name": "adamw", "optimizer.lr": "1e-3", "optimizer.weight_decay": 0.0,
            "lr_scaling.rule": "none", "warmup_epochs": 0, "eval_batch_per_gpu": 32,
            "test_on": "last", "checkpoint.keep_last": 1}
    argv = [sys.executable, "-m", "benscale.cli", "train", "--data", str(shards), "--out",
            str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]

    test = json.loads((out / "run.json").read_text())["test"]
    baseline = frequency_baseline_map_macro(ShardSet(shards, "train").labels,
                                            ShardSet(shards, "test").labels)
    assert test["n_patches"] == len(ShardSet(shards, "test"))
    assert np.isfinite(test["map_macro"])
    assert test["map_macro"] > baseline + MARGIN, (test, baseline)


@pytest.mark.slow
def test_43_class_head_trains_on_v1_shards(tiny_shards: Path, tmp_path: Path) -> None:
    """`num_classes: 43` trains on the original CORINE labels that v1 shards carry."""
    out = tmp_path / "run43"
    sets = {"epochs": 1, "global_batch": 4, "workers": 1, "progress": "false",
            "num_classes": 43, "limit_batches": 2, "limit_eval_batches": 1,
            "checkpoint.enabled": "false"}
    argv = [sys.executable, "-m", "benscale.cli", "train", "--data", str(tiny_shards),
            "--out", str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "2"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["config"]["num_classes"] == 43
    with (out / "per_class_ap.csv").open() as fh:
        classes = {row["class"] for row in csv.DictReader(fh)}
    assert classes == set(ShardSet(tiny_shards, "validation", num_classes=43).classes)
    assert len(classes) == 43
    # The environment recorded is the one that ran: every installed distribution of this
    # interpreter with its version, and the libraries' own idea of their versions.
    import deepspeed
    import torch

    prov = run["provenance"]
    installed: dict[str, str] = {}
    for dist in metadata.distributions():
        installed.setdefault(dist.metadata["Name"], dist.version)
    assert prov["environment"] == installed
    # torch.__version__ carries the build's local tag (+cpu, +cu130), the metadata not
    assert prov["environment"]["torch"] == torch.__version__.split("+")[0] \
        == prov["packages"]["torch"]
    assert prov["environment"]["deepspeed"] == deepspeed.__version__
    assert prov["environment"]["numpy"] == np.__version__
    assert prov["python"] == sys.version.split()[0]
