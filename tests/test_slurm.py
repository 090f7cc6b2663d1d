"""The study through profiles/slurm on a REAL Slurm cluster (tools/local-slurm: slurmctld
and two slurmd as fake nodes with fake GPUs, on this machine).

A tiny study (config/tiny.yaml: both engines, points of 1 node x 2 tasks and 2 nodes x 2
tasks) runs as Slurm jobs. First run: one 2-node point is killed on purpose
(debug.kill_points), the other points and the report still complete and the run fails.
Second run, without the kill: only that point is redone. Then every point must have been
its own Slurm job of the requested shape, with ranks over both fake nodes and everything
recorded in run.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import skip_unless_ci
from snakemake_runner import REPO, TINY, output_of, snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

HARNESS = REPO / "tools" / "local-slurm"
SLURM_PROFILE = REPO / "profiles" / "slurm"
GPUS_PER_NODE = 2
POINTS = {f"{engine}/strong-n{nodes}-r0": nodes
          for engine in ("deepspeed", "ddp") for nodes in (1, 2)}
KILLED = "ddp/strong-n2-r0"
SURVIVOR = "ddp/strong-n1-r0"
#: Status checks for a cluster without slurmdbd (see tools/local-slurm/README.md).
SLURM_ARGS = ("--profile", SLURM_PROFILE, "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5")
HARNESS_ENV = {"LOCAL_SLURM_NODES": "2", "LOCAL_SLURM_CPUS": "4",
               "LOCAL_SLURM_GPUS": str(GPUS_PER_NODE), "LOCAL_SLURM_MIN_JOB_AGE": "3600"}


def _missing_slurm() -> list[str]:
    return [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
            if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


@pytest.fixture(scope="module")
def slurm_cluster() -> Any:
    """Start the project's local Slurm cluster; stop it afterwards."""
    if os.geteuid() != 0:
        skip_unless_ci("the local Slurm cluster (tools/local-slurm/start.sh) must be started "
                       "as root; run the tests as root (CI does)")
    missing = _missing_slurm()
    if missing:
        skip_unless_ci(f"Slurm packages missing ({', '.join(missing)}): run "
                       "tools/install-system-deps.sh as root (make test does)")
    env = {**os.environ, **HARNESS_ENV}
    start = subprocess.run(["bash", str(HARNESS / "start.sh")], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert start.returncode == 0, f"local Slurm did not start:\n{start.stdout}\n{start.stderr}"
    yield
    subprocess.run(["bash", str(HARNESS / "stop.sh")], env=env, capture_output=True,
                   text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm-study")


def study_config(workdir: Path, kill: bool) -> Path:
    config = {"study": {"name": "slurm", "nodes": sorted(set(POINTS.values())),
                        "gpus_per_node": GPUS_PER_NODE},
              "launcher": {"kind": "srun"},
              "debug": {"kill_points": [KILLED] if kill else [], "kill_after_s": 1}}
    return write_config(workdir / ("kill.yaml" if kill else "study.yaml"), config)


def run_json(workdir: Path, point: str) -> dict[str, Any]:
    return json.loads((workdir / "results" / "slurm" / "runs" / point / "run.json").read_text())


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


@pytest.fixture(scope="module")
def first_run(slurm_cluster: None, workdir: Path) -> dict[str, Any]:
    """The study with one 2-node point killed: the run fails, the rest completes."""
    proc = snakemake(workdir, *SLURM_ARGS, configfiles=(TINY, study_config(workdir, kill=True)))
    survivor_json = workdir / "results" / "slurm" / "runs" / SURVIVOR / "run.json"
    survivor = run_json(workdir, SURVIVOR) if survivor_json.exists() else None
    survivor_mtime = survivor_json.stat().st_mtime if survivor else None
    return {"proc": proc, "survivor": survivor, "survivor_mtime": survivor_mtime}


@pytest.fixture(scope="module")
def second_run(first_run: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The same study without the kill: Snakemake redoes the failed point only."""
    proc = snakemake(workdir, *SLURM_ARGS, configfiles=(TINY, study_config(workdir, kill=False)))
    return {"proc": proc}


def test_failed_point_is_reported_and_the_rest_completes(first_run: dict[str, Any],
                                                          workdir: Path) -> None:
    proc, out = first_run["proc"], output_of(first_run["proc"])
    assert proc.returncode != 0, out[-4000:]
    study = workdir / "results" / "slurm"
    assert first_run["survivor"] is not None, out[-6000:]
    assert first_run["survivor"]["status"] == "ok"
    assert not (study / "runs" / KILLED / "run.json").exists()
    log = study / "logs" / "train" / f"{KILLED}.log"
    assert log.exists() and "srun" in log.read_text()
    # the report was still built (onerror), with the failed point and its log
    html = (study / "report" / "index.html").read_text()
    assert KILLED in html and "failed" in html.lower()
    assert f"{KILLED}.log" in html
    assert "Re-run the same command to redo only the failed points" in out


def test_rerun_redoes_only_the_failed_point(first_run: dict[str, Any],
                                            second_run: dict[str, Any], workdir: Path) -> None:
    out = output_of(second_run["proc"])
    assert second_run["proc"].returncode == 0, out[-6000:]
    assert job_stats(out).get("train") == 1, out[-3000:]
    survivor = workdir / "results" / "slurm" / "runs" / SURVIVOR / "run.json"
    assert survivor.stat().st_mtime == first_run["survivor_mtime"]
    assert run_json(workdir, SURVIVOR) == first_run["survivor"]
    html = (workdir / "results" / "slurm" / "report" / "index.html").read_text()
    assert all(point in html for point in POINTS)


@pytest.mark.parametrize(("point", "nodes"), list(POINTS.items()))
def test_each_point_is_one_slurm_job_of_its_shape(second_run: dict[str, Any], workdir: Path,
                                                  point: str, nodes: int) -> None:
    assert second_run["proc"].returncode == 0
    run = run_json(workdir, point)
    world, slurm = run["world"], run["provenance"]["slurm"]
    # the allocation: its own job, `nodes` nodes, gpus_per_node tasks and GPUs per node
    job = scontrol_job(slurm["SLURM_JOB_ID"])
    assert job["JobState"] == "COMPLETED"
    assert (int(job["NumNodes"]), int(job["NumTasks"])) == (nodes, nodes * GPUS_PER_NODE)
    assert job["TresPerNode"].endswith(f"gpu:{GPUS_PER_NODE}")  # GPUs asked per node
    # the ranks: world = nodes x tasks per node, spread over the fake nodes by srun
    assert (world["world_size"], world["nodes"]) == (nodes * GPUS_PER_NODE, nodes)
    assert world["launcher"] == "slurm" and not world["emulated_nodes"]
    # (the points run at the same time, so a 1-node job may get either node)
    allocated = subprocess.run(["scontrol", "show", "hostnames", job["NodeList"]],
                               capture_output=True, text=True, check=True).stdout.split()
    assert len(allocated) == nodes and set(allocated) <= {"node1", "node2"}
    assert world["rank_hosts"] == [h for h in allocated for _ in range(GPUS_PER_NODE)]
    variant = point.split("/")[0]
    assert run["engine"]["name"] == variant
    assert run["config"]["tags"] == {"study": "slurm", "point": point, "variant": variant,
                                     "mode": "strong", "repeat": 0, "nodes": nodes,
                                     "gpus_per_node": GPUS_PER_NODE}
    # one row per epoch, timings present
    epochs = pd.read_csv(workdir / "results" / "slurm" / "runs" / point / "epochs.csv")
    assert epochs["epoch"].tolist() == list(range(1, run["config"]["epochs"] + 1))
    assert set(epochs["world_size"]) == {nodes * GPUS_PER_NODE} and set(epochs["nodes"]) == {nodes}
    assert epochs[["epoch_time_s", "compute_time_s", "comm_time_s"]].notna().all().all()


def test_points_ran_as_distinct_jobs(second_run: dict[str, Any], workdir: Path) -> None:
    ids = {run_json(workdir, p)["provenance"]["slurm"]["SLURM_JOB_ID"] for p in POINTS}
    assert len(ids) == len(POINTS)
