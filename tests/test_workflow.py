"""The Snakemake workflow: lint, schema, the plan a cluster would get, and a local run.

Every test runs a real `snakemake` (tests/snakemake_runner.py) in its own folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from snakemake_runner import REPO, TINY, output_of, snakemake, write_config

SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
NODES_1_TO_64 = [1, 2, 4, 8, 16, 32, 64]


def test_lint_is_clean(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, output_of(proc)
    assert "Congratulations, your workflow is in a good condition" in output_of(proc)


@pytest.mark.parametrize(("config", "key"), [
    ({"study": {"nodez": [1, 2]}}, "nodez"),
    ({"studdy": {"name": "x"}}, "studdy"),
    ({"train": {"precision": "fp16"}}, "fp16"),
])
def test_schema_rejects_typos(tmp_path: Path, config: dict, key: str) -> None:
    proc = snakemake(tmp_path, "-n", configfiles=(write_config(tmp_path / "c.yaml", config),))
    assert proc.returncode != 0
    out = output_of(proc)
    assert key in out and ("Additional properties are not allowed" in out
                           or "is not one of" in out), out


def test_local_profile_refuses_oversubscription(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"study": {"nodes": [1, 8], "gpus_per_node": 2,
                                                          "global_batch": 64}})
    proc = snakemake(tmp_path, "-n", "--profile", LOCAL_PROFILE, configfiles=(config,))
    assert proc.returncode != 0
    assert "strong-n8-r0 needs 16 local processes" in output_of(proc)


def parse_dry_run_jobs(text: str, rule: str) -> list[dict[str, str]]:
    """The wildcards and resources of each job of ``rule`` in a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\n)|\n(?=(?:local)?rule \w+:)", text):
        if not re.search(rf"^(?:local)?rule {rule}:", block.strip(), re.M):
            continue
        wild = re.search(r"wildcards: (.*)", block)
        res = re.search(r"resources: (.*)", block)
        job = dict(kv.split("=", 1) for kv in wild.group(1).split(", ")) if wild else {}
        job["resources"] = res.group(1) if res else ""
        jobs.append(job)
    return jobs


def parse_resources(text: str) -> dict[str, object]:
    """``nodes=64, tasks_per_node=4, slurm_extra='--gpus-per-node=4'`` -> a dict."""
    out: dict[str, object] = {}
    for item in re.split(r", (?=\w+=)", text):
        key, _, value = item.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def sbatch_line(resources: dict[str, object]) -> str:
    """The sbatch command snakemake-executor-plugin-slurm builds from these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources(resources), threads=1)
    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": "c", "account": "",
              "partition": "", "workdir": "."}
    return get_submit_command(job, params)


def test_dry_run_of_64_node_study_on_slurm_profile(tmp_path: Path) -> None:
    """A 2 x 2 grid of variants over 1..64 nodes x 4 GPUs: one allocation per point, with
    the right shape and GPUs."""
    grid = {"engine": ["deepspeed", "ddp"], "precision": ["fp32", "bf16"]}
    variants = ["deepspeed-fp32", "deepspeed-bf16", "ddp-fp32", "ddp-bf16"]
    config = write_config(tmp_path / "study64.yaml", {
        "study": {"name": "big", "modes": ["strong", "weak"], "nodes": NODES_1_TO_64,
                  "gpus_per_node": 4, "global_batch": 1024, "batch_per_gpu": 64,
                  "variant_grid": grid},
        "launcher": {"kind": "srun"},
        "slurm": {"cpus_per_task": 12, "mem_mb_per_node": 200000, "runtime_min": 240},
    })
    proc = snakemake(tmp_path, "-n", "--profile", SLURM_PROFILE, configfiles=(config,))
    out = output_of(proc)
    assert proc.returncode == 0, out
    jobs = parse_dry_run_jobs(out, "train")
    assert sorted((j["variant"], j["mode"], int(j["nodes"])) for j in jobs) == sorted(
        (v, m, n) for v in variants for m in ("strong", "weak") for n in NODES_1_TO_64)
    for job in jobs:
        nodes = int(job["nodes"])
        res = parse_resources(job["resources"])
        assert (res["nodes"], res["tasks_per_node"], res["cpus_per_task"]) == (nodes, 4, 12)
        assert (res["mpi"], res["slurm_extra"]) == ("srun", "'--gpus-per-node=4'")
        assert (res["mem_mb"], res["runtime"]) == (200000, 240)
        assert "gpu" not in res  # the plugin's gpu is a per-job total
        line = sbatch_line(res)
        for flag in (f"--nodes={nodes}", "--ntasks-per-node=4", "--cpus-per-task=12",
                     "--gpus-per-node=4", "--mem 200000", "-t 240"):
            assert flag in line, line
        # the step inside the allocation: every rank of every node
        assert (f"srun --nodes={nodes} --ntasks={4 * nodes} --ntasks-per-node=4 "
                "--cpus-per-task=12 --kill-on-bad-exit=1 --gpus-per-node=4 benscale train") in out
    assert "--set global_batch=1024 --set batch_per_gpu=null" in out   # strong
    assert "--set global_batch=null --set batch_per_gpu=64" in out     # weak
    for variant in variants:  # each variant's own engine and precision, same batches
        engine, precision = variant.split("-")
        assert (f"--set engine={engine} --set precision={precision} --set zero_stage=0"
                in out), variant


@pytest.mark.slow
def test_local_profile_runs_the_whole_dag(tmp_path: Path) -> None:
    """synth -> ingest -> extract -> train (the demo's geometry: both engines, 1 and 2
    emulated nodes x 2 processes) -> report, through profiles/local; then one point
    reproduced from the report's bundle in a scrubbed environment, bit for bit."""
    config = write_config(tmp_path / "local.yaml", {"study": {"name": "local"}})
    proc = snakemake(tmp_path, "--profile", LOCAL_PROFILE, "--cores", "2",
                     configfiles=(TINY, config))
    assert proc.returncode == 0, output_of(proc)[-6000:]
    study_dir = tmp_path / "results" / "local"
    study = json.loads((study_dir / "study.json").read_text())
    points = [f"{v}/strong-n{n}-r0" for v in ("deepspeed", "ddp") for n in (1, 2)]
    assert [p["name"] for p in study["points"]] == points
    for point in points:
        nodes = int(point.split("-n")[1][0])
        run = json.loads((study_dir / "runs" / point / "run.json").read_text())
        world = run["world"]
        assert (world["world_size"], world["nodes"], world["gpus_per_node"]) == \
            (2 * nodes, nodes, 2)
        assert run["status"] == "ok" and run["config"]["tags"]["point"] == point
        assert run["engine"]["name"] == point.split("/")[0]
        assert run["runtime"]["threads"] == 1 and run["config"]["threads"] == 1
        epochs = pd.read_csv(study_dir / "runs" / point / "epochs.csv")
        assert epochs["epoch"].tolist() == [1]
        assert (epochs["world_size"].tolist(), epochs["nodes"].tolist()) == \
            ([2 * nodes], [nodes])
    runs = pd.read_csv(study_dir / "report" / "runs.csv")
    assert list(runs["status"]) == ["ok"] * 4 and sorted(runs["world_size"]) == [2, 2, 4, 4]
    assert sorted(set(runs["variant"])) == ["ddp", "deepspeed"]
    html = (study_dir / "report" / "index.html").read_text()
    assert "strong-n1-r0" in html and "strong-n2-r0" in html and "data:image/png" in html
    # nothing left to do; and Snakemake's own report bundles the outputs
    again = snakemake(tmp_path, "-n", "--profile", LOCAL_PROFILE, configfiles=(TINY, config))
    assert "Nothing to be done" in output_of(again), output_of(again)
    bundle = tmp_path / "snakemake-report.zip"
    rep = snakemake(tmp_path, "--report", bundle, configfiles=(TINY, config))
    assert rep.returncode == 0, output_of(rep)[-3000:]
    names = zipfile.ZipFile(bundle).namelist()
    assert sum(n.endswith("epochs.csv") for n in names) >= 4  # one per point (3. Training)
    assert any(n.endswith("study.json") for n in names)       # 2. Study
    assert any(n.endswith("stats.json") for n in names)       # 1. Data
    # 4. Report: benscale's report folder, its page and figures
    assert any(n.endswith("/index.html") and "/data/raw/" in n for n in names)
    assert any(n.endswith("/figures/epoch_time.png") for n in names)
    reproduce_in_scrubbed_environment(tmp_path, study_dir)


def reproduce_in_scrubbed_environment(workdir: Path, study_dir: Path) -> None:
    """What a reviewer does in a plain shell: `env -i` with only PATH and HOME (none of the
    thread variables Snakemake exported to the DAG's jobs). The metrics must agree bit for
    bit; without the launcher on PATH the command says so."""
    bundle, shards = study_dir / "report" / "bundle", workdir / "results" / "data" / "shards"
    venv_bin = Path(sys.executable).parent
    argv = [str(venv_bin / "benscale"), "reproduce", str(bundle), "--points",
            "deepspeed/strong-n2-r0", "--data", str(shards)]
    home = {"HOME": str(workdir)}
    proc = subprocess.run(["env", "-i", f"PATH={venv_bin}:/usr/bin:/bin", *(
        f"{k}={v}" for k, v in home.items()), *argv, "--out", str(workdir / "again")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a timing outside its factor
    cmp = pd.read_csv(workdir / "again" / "comparison.csv")
    metrics = cmp[cmp["kind"] == "metric"]
    assert len(metrics) > 10 and metrics["agree"].all(), metrics[~metrics["agree"]].to_string()
    missing = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={workdir}", *argv,
                              "--out", str(workdir / "again2")],
                             capture_output=True, text=True, timeout=300, check=False)
    assert missing.returncode == 2
    assert "mpiexec: not found on PATH" in missing.stderr and "--launcher" in missing.stderr


def test_a_tar_archive_is_streamed_by_one_extract_rule(tmp_path: Path) -> None:
    """data.archive naming a .tar* file: one `benscale extract ARCHIVE` job (no ingest, no
    unpacking) writes the index and the shards; a folder keeps ingest + extract."""
    import tarfile

    from conftest import run_cli

    v2 = tmp_path / "synth"
    run_cli("synth", "--format", "v2", "--patches", 24, "--seed", 1, "--out", v2)
    release = tmp_path / "release"
    release.mkdir()
    archive = release / "BigEarthNet-S2.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(v2 / "BigEarthNet-S2", arcname="BigEarthNet-S2")
    for parquet in v2.glob("*.parquet"):
        (release / parquet.name).write_bytes(parquet.read_bytes())
    config = write_config(tmp_path / "c.yaml", {"data": {"archive": str(archive),
                                                         "extract": {"shard_size": 8}}})
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "-n", "-p", configfiles=(TINY, config))
    out = output_of(proc)
    assert proc.returncode == 0, out
    assert parse_dry_run_jobs(out, "extract") and not parse_dry_run_jobs(out, "ingest")
    assert f"benscale extract {archive} --out results/data/shards --index-out " \
           "results/data/index" in out
    target = "results/data/shards/manifest.json"
    proc = snakemake(work, "--cores", "1", target, configfiles=(TINY, config))
    assert proc.returncode == 0, output_of(proc)[-3000:]
    data = work / "results" / "data"
    assert (data / "index" / "index.parquet").is_file()
    assert json.loads((data / "shards" / "extract-report.json").read_text())["stream"][
        "plan"] == "metadata.parquet beside the archive"
    assert not list(data.rglob("*.tif"))
    folder = write_config(tmp_path / "f.yaml", {"data": {"archive": str(v2)}})
    (tmp_path / "work2").mkdir()
    proc = snakemake(tmp_path / "work2", "-n", configfiles=(TINY, folder))
    assert parse_dry_run_jobs(output_of(proc), "ingest"), output_of(proc)
