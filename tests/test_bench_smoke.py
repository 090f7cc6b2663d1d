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
def test_gpu_benchmark_plumbing_on_the_cpu_through_the_offline_node_path(
        repo_dir: Path, shared_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench gpu --device cpu --quick`` as a GPU node without internet runs it: every
    figure of the GPU run, on the CPU (no docs), started by tools/gpu-node.sh with a
    dependency (hjson, DeepSpeed's) that only the wheel folder of tools/wheelhouse.py has."""
    monkeypatch.syspath_prepend(str(repo_dir))
    keys = set(importlib.import_module("bench.gpu").KEYS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    freeze = subprocess.run([sys.executable, "-m", "pip", "list", "--format", "freeze"],
                            capture_output=True, text=True, check=True).stdout
    have = tmp_path / "node-packages.txt"
    have.write_text("".join(line + "\n" for line in freeze.splitlines()
                            if not line.lower().startswith("hjson==")))
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    built = subprocess.run([sys.executable, "tools/wheelhouse.py", "--python-version",
                            python_version, "--have", str(have), "--out", str(wheels)],
                           cwd=repo_dir, env=env, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    assert [p.name.split("-")[0] for p in wheels.glob("*.whl")] == ["hjson"], built.stdout
    proc = subprocess.run(
        ["bash", "tools/gpu-node.sh", "--device", "cpu", "--quick",
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        cwd=repo_dir, capture_output=True, text=True, check=False,
        env={**env, "PYTHON": sys.executable, "WHEELS": str(wheels), "SITE": str(site),
             "BENSCALE_SHARED": str(shared_dir)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list(site.glob("hjson*")), "the wheel folder was not installed"
    (path,) = (tmp_path / "out").glob("gpu-*-quick.json")
    bench = json.loads(path.read_text())["benchmarks"]["gpu"]
    (systems,) = (tmp_path / "out").glob("gpu-*-systems.yaml")
    assert "not a GPU measurement" in systems.read_text()
    assert bench["status"] == "ok", bench.get("error")
    assert set(bench["figures"]) == keys
    for key, fig in bench["figures"].items():
        assert all(math.isfinite(v) and v > 0 for v in _numbers(fig["ratio"])), key


def test_wheelhouse_takes_the_runtime_dependencies_at_their_installed_versions(
        repo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel folder's list: benscale's run-time closure (no workflow, test or bench
    extras), at the versions installed here, less what the node has."""
    from importlib.metadata import version

    monkeypatch.syspath_prepend(str(repo_dir / "tools"))
    wheelhouse = importlib.import_module("wheelhouse")
    closure = wheelhouse.runtime_closure("benscale", "3.12")
    for name in ("torch", "deepspeed", "netcdf4", "rasterio", "mlperf-logging", "hjson",
                 "pydantic"):  # direct, and through DeepSpeed
        assert closure[name] == version(name), name
    for name in ("benscale", "snakemake", "pytest", "torchgeo"):
        assert name not in closure, name


def test_wheelhouse_reads_a_pip_freeze_or_names(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                repo_dir: Path) -> None:
    monkeypatch.syspath_prepend(str(repo_dir / "tools"))
    wheelhouse = importlib.import_module("wheelhouse")
    listing = tmp_path / "have.txt"
    listing.write_text("# the node\nNumPy==2.5.2\ntorch @ file:///wheels/torch.whl\n"
                       "py_cpuinfo\n\n")
    assert wheelhouse.node_has(listing) == {"numpy", "torch", "py-cpuinfo"}


def test_wheelhouse_names_a_dependency_missing_from_the_venv(
        repo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(repo_dir / "tools"))
    wheelhouse = importlib.import_module("wheelhouse")
    with pytest.raises(SystemExit, match="no-such-dist is not installed in this venv: run "
                                         "`make venv` first"):
        wheelhouse.runtime_closure("no-such-dist", "3.12")


def test_gpu_node_script_names_a_missing_wheel_folder(repo_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "tools/gpu-node.sh"], cwd=repo_dir, capture_output=True,
                          text=True, check=False, env={**os.environ,
                                                      "WHEELS": str(tmp_path / "none")})
    assert proc.returncode == 2
    assert f"no wheels in {tmp_path / 'none'}" in proc.stderr


@pytest.mark.timeout(600)
def test_gpu_benchmark_keeps_the_other_figures_when_one_path_fails(repo_dir: Path,
                                                                   tmp_path: Path) -> None:
    """A GPU machine is lent for minutes, and its CUDA paths run there first: one failing
    path (here the deepspeed harness, made to fail as an untried path might) is recorded
    by name, and every other measurement of the run still comes back."""
    out = tmp_path / "steps.json"
    script = f"""
import sys
sys.path[:0] = [{str(repo_dir)!r}, {str(repo_dir / "src")!r}]
import bench.gpu as gpu
from benscale.train.world import free_port

class FailingDeepSpeed(gpu.Harness):
    def __init__(self, engine, *args, **kwargs):
        if engine == "deepspeed":
            raise RuntimeError("CUDA error: an untried path")
        super().__init__(engine, *args, **kwargs)

gpu.Harness = FailingDeepSpeed
gpu.steps_worker(0, {{"device": "cpu", "batches": [2], "repeats": 1, "steps": 1, "warmup": 1,
                     "threads": 1, "port": free_port(), "out": {str(out)!r}}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    measured = json.loads(out.read_text())
    assert measured["errors"] == {
        "deepspeed_fp32_b2": "RuntimeError: CUDA error: an untried path",
        "deepspeed_bf16_b2": "RuntimeError: CUDA error: an untried path"}
    assert set(measured["steps"]) == {"ddp_fp32_b2", "ddp_bf16_b2", "ddp_bf16_cl_b2"}
    for rates in measured["steps"].values():
        assert len(rates["benscale"]) == len(rates["bare"]) == 1
        assert all(r > 0 for r in rates["benscale"] + rates["bare"])
    assert measured["profile"]["benscale_compute_s_per_step"] > 0


def test_a_benchmark_that_names_failures_is_partial(repo_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What was measured is kept, the failures are named, and the run does not pass."""
    import types

    monkeypatch.syspath_prepend(str(repo_dir))
    bench_main = importlib.import_module("bench.__main__")
    common = importlib.import_module("bench.common")
    figure = common.rate_figure("kept", "a figure that was measured", [2.0], [1.0], "base",
                                "items/s")
    probe = types.ModuleType("bench.partial_probe")
    probe.run = lambda ctx: ([figure], {"errors": {"epoch": "RuntimeError: boom"}})
    monkeypatch.setitem(sys.modules, "bench.partial_probe", probe)
    ctx = common.Context(quick=True, repeats=1, work=tmp_path, warmup=0, device="cpu",
                         out_dir=tmp_path)
    record = bench_main.run_one("partial_probe", ctx)
    assert record["status"] == "partial"
    assert record["error"] == "epoch: RuntimeError: boom"
    assert list(record["figures"]) == ["kept"]
