"""benscale.study: the points of a study, their batches, launch argv and Slurm resources."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from benscale.errors import ConfigError
from benscale.files.study import Point, SlurmSection, StudyConfig
from benscale.study import launchers, plan, slurm

REPO = Path(__file__).resolve().parents[1]


def study_config(**study: object) -> dict:
    """A resolved config as the workflow passes it (the defaults of config/config.yaml),
    with a single variant unless the test asks for others."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["study"].update({"variants": [], "variant_grid": {}})
    config["study"].update(study)
    return config


def typed(config: dict) -> StudyConfig:
    return StudyConfig.from_dict(config)


def point(name: str, mode: str, nodes: int, gpn: int, world: int, gb: int, bpg: int) -> Point:
    return Point(name, "default", mode, nodes, gpn, 0, world, gb, bpg, f"runs/{name}",
                 f"logs/train/{name}.log")


def test_points_strong_and_weak_batches() -> None:
    config = study_config(modes=["strong", "weak"], nodes=[1, 2, 4], gpus_per_node=4,
                          repeats=2, global_batch=256, batch_per_gpu=32)
    points = plan.plan_points(typed(config))
    assert [p.name for p in points[:3]] == ["default/strong-n1-r0", "default/strong-n1-r1",
                                            "default/strong-n2-r0"]
    assert len(points) == 2 * 3 * 2
    by_name = {p.name: p for p in points}
    # strong: the global batch stays, the per-GPU batch shrinks
    strong = [by_name[f"default/strong-n{n}-r0"] for n in (1, 2, 4)]
    assert [(p.world_size, p.global_batch, p.batch_per_gpu) for p in strong] == [
        (4, 256, 64), (8, 256, 32), (16, 256, 16)]
    # weak: the per-GPU batch stays, the global batch grows
    weak = [by_name[f"default/weak-n{n}-r1"] for n in (1, 2, 4)]
    assert [(p.global_batch, p.batch_per_gpu) for p in weak] == [(128, 32), (256, 32), (512, 32)]


def test_grad_accumulation_enters_the_batches() -> None:
    config = study_config(modes=["strong", "weak"], nodes=[2], gpus_per_node=2,
                          global_batch=64, batch_per_gpu=8)
    config["train"]["grad_accumulation"] = 2
    strong, weak = plan.plan_points(typed(config))
    assert (strong.global_batch, strong.batch_per_gpu) == (64, 8)  # 64 / (4 ranks x 2 steps)
    assert (weak.global_batch, weak.batch_per_gpu) == (64, 8)      # 8 x 4 ranks x 2 steps


def test_indivisible_global_batch_names_point_and_fix() -> None:
    config = study_config(nodes=[1, 3], gpus_per_node=4, global_batch=32)
    with pytest.raises(ConfigError,
                       match=r"default/strong-n3-r0.*cannot be split over world size 12"):
        plan.plan_points(typed(config))


def test_duplicate_node_counts_refused() -> None:
    with pytest.raises(ConfigError, match="once"):
        plan.plan_points(typed(study_config(nodes=[1, 1])))


def test_sixty_four_nodes_plan() -> None:
    config = study_config(nodes=[1, 2, 4, 8, 16, 32, 64], gpus_per_node=4, global_batch=1024)
    points = plan.plan_points(typed(config))
    assert [p.world_size for p in points] == [4, 8, 16, 32, 64, 128, 256]
    assert points[-1].batch_per_gpu == 4


def test_local_cap_refuses_oversubscription() -> None:
    points = plan.plan_points(typed(study_config(nodes=[1, 2, 4], gpus_per_node=4)))
    with pytest.raises(ConfigError,
                       match=r"default/strong-n4-r0 needs 16 local processes.*max_local_procs=8"):
        launchers.check_local_cap(points, "mpiexec", 8)
    launchers.check_local_cap(points, "mpiexec", 16)   # raised cap: accepted
    launchers.check_local_cap(points, "srun", 1)       # a cluster has no local cap


def test_launcher_argv_local() -> None:
    assert launchers.launcher_argv("mpiexec", 2, 2, 1) == [
        "env", "OMP_NUM_THREADS=1", "BENSCALE_NODES=2", "mpiexec", "-n", "4"]
    assert launchers.launcher_argv("torchrun", 3, 2, 2) == [
        "env", "OMP_NUM_THREADS=2", "BENSCALE_NODES=3", "torchrun", "--standalone",
        "--nproc-per-node=6", "--no-python"]


def test_launcher_argv_srun_spells_out_the_step() -> None:
    argv = launchers.launcher_argv("srun", 64, 4, 12, "gpus-per-node")
    assert argv == ["env", "OMP_NUM_THREADS=12", "srun", "--nodes=64", "--ntasks=256",
                    "--ntasks-per-node=4", "--cpus-per-task=12", "--kill-on-bad-exit=1",
                    "--gpus-per-node=4"]
    assert launchers.launcher_argv("srun", 2, 2, 1, "gres")[-1] == "--gres=gpu:2"
    assert "--gpus-per-node" not in " ".join(launchers.launcher_argv("srun", 2, 2, 1, "none"))
    # one rank: the plugin already runs the rule as a one-task step
    assert launchers.launcher_argv("srun", 1, 1, 4) == ["env", "OMP_NUM_THREADS=4"]
    with pytest.raises(ConfigError, match=r"launcher\.kind"):
        launchers.launcher_argv("mpirun-typo", 1, 2, 1)


def test_slurm_resources_one_allocation_per_point() -> None:
    cfg = SlurmSection(cpus_per_task=8, mem_mb_per_node=64000, runtime_min=90,
                       gpu_request="gpus-per-node")
    big = point("default/strong-n64-r0", "strong", 64, 4, 256, 1024, 4)
    assert slurm.slurm_resources(big, cfg) == {
        "nodes": 64, "tasks_per_node": 4, "mpi": "srun", "cpus_per_task": 8,
        "mem_mb": 64000, "runtime": 90, "slurm_extra": "'--gpus-per-node=4'"}
    # one GPU per node: the plugin refuses tasks_per_node=1 for MPI jobs -> tasks = nodes
    thin = point("default/weak-n4-r0", "weak", 4, 1, 4, 128, 32)
    res = slurm.slurm_resources(thin, replace(cfg, gpu_request="gres"))
    assert (res["tasks"], res["gres"], res["tasks_per_gpu"]) == (4, "gpu:1", 1)
    assert "tasks_per_node" not in res and "gpu" not in res
    # a single rank is no MPI job
    single = point("default/strong-n1-r0", "strong", 1, 1, 1, 32, 32)
    res = slurm.slurm_resources(single, replace(cfg, mem_mb_per_node=None, gpu_request="none"))
    assert res == {"nodes": 1, "cpus_per_task": 8, "runtime": 90}


def test_train_overrides_fix_exactly_one_batch() -> None:
    config = study_config(modes=["strong", "weak"], nodes=[2], gpus_per_node=2,
                          global_batch=32, batch_per_gpu=16)
    strong, weak = plan.plan_points(typed(config))
    s = dict(item.split("=", 1) for item in plan.train_overrides(strong, typed(config)))
    w = dict(item.split("=", 1) for item in plan.train_overrides(weak, typed(config)))
    assert (s["global_batch"], s["batch_per_gpu"]) == ("32", "null")
    assert (w["global_batch"], w["batch_per_gpu"]) == ("null", "16")
    assert s["tags.point"] == "default/strong-n2-r0" and s["tags.nodes"] == "2"
    assert s["epochs"] == str(config["train"]["epochs"])
    assert s["workers"] == "0"  # train.set passes through
    args = plan.set_args(strong, typed(config))
    assert args[0::2] == ["--set"] * (len(args) // 2)


def test_launch_command_with_injected_kill() -> None:
    config = study_config(nodes=[1, 2], gpus_per_node=2)
    config["debug"] = {"kill_points": ["default/strong-n2-r0"], "kill_after_s": 3}
    one, two = plan.plan_points(typed(config))
    assert not launchers.launch_command(one, typed(config)).startswith("timeout")
    assert shlex.split(launchers.launch_command(two, typed(config)))[:5] == [
        "timeout", "--signal=TERM", "--kill-after=10", "3s", "env"]


def test_study_document_and_cli(tmp_path: Path) -> None:
    config = study_config(name="unit", modes=["strong"], nodes=[1, 2], gpus_per_node=2)
    out = tmp_path / "study.json"
    proc = subprocess.run([sys.executable, "-m", "benscale.cli", "study", "write",
                           "--config-json", json.dumps(config), "--out", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["study"] == "unit" and doc["config"] == config
    assert doc["machine"]["name"] == config["machine"]["name"]
    assert doc["points"][1] == {
        "name": "default/strong-n2-r0", "variant": "default", "mode": "strong", "nodes": 2,
        "gpus_per_node": 2, "repeat": 0, "world_size": 4, "global_batch": 32,
        "batch_per_gpu": 8, "run_dir": "runs/default/strong-n2-r0",
        "log": "logs/train/default/strong-n2-r0.log"}
    # `benscale study points` prints the same plan
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    table = subprocess.run([sys.executable, "-m", "benscale.cli", "study", "points",
                            "--config", str(cfg_file)], capture_output=True, text=True,
                           check=True).stdout
    assert "default/strong-n2-r0" in table and table.count("\n") == 3


def test_cli_rejects_unresolved_config(tmp_path: Path) -> None:
    broken = copy.deepcopy(study_config())
    del broken["train"]
    proc = subprocess.run([sys.executable, "-m", "benscale.cli", "study", "points",
                           "--config-json", json.dumps(broken)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and "RESOLVED" in proc.stderr


def test_variant_grid_expands_to_named_variants() -> None:
    config = study_config(nodes=[1, 2], gpus_per_node=2, variant_grid={
        "engine": ["deepspeed", "ddp"], "precision": ["fp32", "bf16"]})
    points = plan.plan_points(typed(config))
    names = list(dict.fromkeys(p.variant for p in points))
    assert names == ["deepspeed-fp32", "deepspeed-bf16", "ddp-fp32", "ddp-bf16"]
    assert len(points) == 4 * 2
    ddp = next(p for p in points if p.name == "ddp-bf16/strong-n2-r0")
    assert ddp.run_dir == "runs/ddp-bf16/strong-n2-r0"
    items = dict(i.split("=", 1) for i in plan.train_overrides(ddp, typed(config)))
    assert (items["engine"], items["precision"], items["tags.variant"]) == ("ddp", "bf16",
                                                                           "ddp-bf16")
    # every variant runs the same batches at the same points
    by_point = {}
    for p in points:
        by_point.setdefault(p.name.split("/")[1], set()).add((p.global_batch, p.batch_per_gpu))
    assert all(len(b) == 1 for b in by_point.values())


def test_grid_leaves_out_what_an_engine_cannot_run() -> None:
    config = typed(study_config(variant_grid={"engine": ["deepspeed", "ddp"],
                                              "zero_stage": [0, 2]}))
    names = [v.name for v in plan.resolve_variants(config)]
    assert names == ["deepspeed-z0", "deepspeed-z2", "ddp-z0"]
    assert plan.grid_variants(config)[1] == [
        "ddp-z2: ZeRO is DeepSpeed's (engine ddp needs zero_stage 0)"]


def test_listed_variants_and_their_errors() -> None:
    listed = [{"name": "ds-z2-bf16", "engine": "deepspeed", "zero_stage": 2,
               "precision": "bf16"},
              {"name": "ddp", "engine": "ddp", "set": {"ddp": {"bucket_cap_mb": 50}}}]
    config = typed(study_config(variants=listed, variant_grid={"precision": ["fp32"]}))
    resolved = {v.name: v for v in plan.resolve_variants(config)}
    assert list(resolved) == ["ds-z2-bf16", "ddp", "fp32"]
    assert resolved["ds-z2-bf16"].zero_stage == 2 and resolved["ddp"].zero_stage == 0
    assert resolved["ddp"].set["ddp"] == {"bucket_cap_mb": 50}
    assert resolved["ddp"].set["workers"] == 0  # train.set underneath
    cases = [
        ([{"name": "a"}, {"name": "a", "engine": "ddp"}], r"duplicate variant name 'a'"),
        ([{"name": "big", "set": {"global_batch": 64}}],
         r"study\.variants\[0\] \(big\): set\.global_batch: a variant may not change the batch"),
        ([{"name": "x", "engine": "ddp", "zero_stage": 2}], r"ZeRO is DeepSpeed's"),
        ([{"name": "y", "set": {"engine": "ddp"}}], r"set\.engine: give it as the variant's own"),
    ]
    for variants, message in cases:
        with pytest.raises(ConfigError, match=message):
            plan.plan_points(typed(study_config(variants=variants)))


def test_the_schema_refuses_unknown_variant_keys(tmp_path: Path) -> None:
    from snakemake_runner import output_of, snakemake, write_config

    bad = write_config(tmp_path / "v.yaml", {"study": {"variants": [
        {"name": "a", "engin": "ddp"}]}})
    proc = snakemake(tmp_path, "-n", configfiles=(bad,))
    assert proc.returncode != 0 and "engin" in output_of(proc)
