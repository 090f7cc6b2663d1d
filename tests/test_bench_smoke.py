"""Smoke test of the benchmark suite: ``python -m bench all --quick`` on tiny sizes.

No timing is asserted (speed goes to docs/benchmarks.md); the test checks that every
benchmark runs end to end through the real commands and writes every figure it promises,
as finite positive numbers with their baselines.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _workflow_has_benchmarks(repo: Path) -> bool:
    """Whether any rule declares a Snakemake ``benchmark:`` file (per-rule times)."""
    return any("benchmark:" in f.read_text() for f in (repo / "workflow" / "rules").glob("*.smk"))


def _numbers(stat: dict) -> list[float]:
    return [stat["median"], stat["min"], stat["max"], *stat["samples"]]


@pytest.mark.timeout(600)
def test_quick_suite_writes_every_figure(repo_dir: Path, shared_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(repo_dir))
    benchmarks = importlib.import_module("bench.__main__").BENCHMARKS
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"), "--docs", str(tmp_path / "benchmarks.md")],
        cwd=repo_dir, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = (tmp_path / "out").glob("*-quick.json")
    record = json.loads(path.read_text())
    assert record["quick"] is True
    assert record["machine"]["cpu_count"] >= 1
    assert list(record["benchmarks"]) == list(benchmarks)
    for name in benchmarks:
        bench = record["benchmarks"][name]
        assert bench["status"] == "ok", (name, bench.get("error"))
        keys = set(importlib.import_module(f"bench.{name}").KEYS)
        if name == "main_job" and not _workflow_has_benchmarks(repo_dir):
            keys.discard("demo_rules_vs_wall")  # needs the rules' `benchmark:` files
        assert set(bench["figures"]) == keys, name
        for key, fig in bench["figures"].items():
            for part in ("candidate", "baseline", "ratio"):
                values = _numbers(fig[part])
                # an overlap may be none at all (DeepSpeed reduces after backward)
                may_be_zero = key.endswith("_comm_overlap") and part != "baseline"
                assert all(math.isfinite(v) and (v > 0 or (may_be_zero and v == 0))
                           for v in values), (name, key, part)
            assert fig["ratio"]["n"] == fig["candidate"]["n"] >= 1
    table = (tmp_path / "benchmarks.md").read_text()
    for name in benchmarks:
        assert f"<!-- bench:{name}:begin -->" in table


def test_gpu_benchmark_refuses_a_machine_without_cuda(repo_dir: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "gpu", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work"), "--docs", str(docs)],
        cwd=repo_dir, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "no CUDA device here" in proc.stderr
    (path,) = (tmp_path / "out").glob("gpu-*.json")
    assert json.loads(path.read_text())["benchmarks"]["gpu"]["status"] == "unavailable"
    assert docs.read_text() == "# Benchmarks\n"  # the recorded GPU figures stay as they were


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_benchmark_plumbing_on_the_cpu(repo_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench gpu --device cpu --quick``: every figure of the GPU run, on the CPU (no docs)."""
    monkeypatch.syspath_prepend(str(repo_dir))
    keys = set(importlib.import_module("bench.gpu").KEYS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "gpu", "--device", "cpu", "--quick",
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        cwd=repo_dir, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = (tmp_path / "out").glob("gpu-*-quick.json")
    bench = json.loads(path.read_text())["benchmarks"]["gpu"]
    (systems,) = (tmp_path / "out").glob("gpu-*-systems.yaml")
    assert "not a GPU measurement" in systems.read_text()
    assert bench["status"] == "ok", bench.get("error")
    assert set(bench["figures"]) == keys
    for key, fig in bench["figures"].items():
        assert all(math.isfinite(v) and v > 0 for v in _numbers(fig["ratio"])), key
