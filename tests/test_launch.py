"""Rank/world/master discovery from launcher environments (pure functions, no cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benscale.errors import ConfigError
from benscale.train import world as launch
from conftest import launcher_env


@pytest.mark.parametrize(("hostlist", "hosts"), [
    ("node[1-3,5],gpu01", ["node1", "node2", "node3", "node5", "gpu01"]),
    ("gpu[08-11]", ["gpu08", "gpu09", "gpu10", "gpu11"]),
    ("single", ["single"]),
    ("a[1-2]b[01-02]", ["a1b01", "a1b02", "a2b01", "a2b02"]),
    ("x[7],y[1,3]-ib", ["x7", "y1-ib", "y3-ib"]),
    ("jwb[0001-0002],jwb0100", ["jwb0001", "jwb0002", "jwb0100"]),
])
def test_expand_hostlist_matches_scontrol(hostlist: str, hosts: list[str]) -> None:
    assert launch.expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["node[1-3", "node[a-b]", "node[1-]"])
def test_bad_hostlist_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST"):
        launch.expand_hostlist(bad)


def test_torchrun_environment() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
           "GROUP_RANK": "1", "MASTER_ADDR": "n01", "MASTER_PORT": "29400",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}
    world = launch.discover(env)
    assert world == launch.World(rank=5, world_size=8, local_rank=1, local_world_size=4,
                                 nodes=2, node_rank=1, master_addr="n01", master_port=29400,
                                 launcher="torchrun")


def test_slurm_environment_master_is_first_host_and_port_from_job_id() -> None:
    env = {"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2", "SLURM_NODEID": "1",
           "SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0"}
    world = launch.discover(env)
    assert (world.rank, world.world_size, world.local_rank) == (6, 8, 2)
    assert (world.nodes, world.node_rank, world.local_world_size) == (2, 1, 4)
    assert world.master_addr == "gpu03"
    assert world.master_port == launch.SLURM_PORT_BASE + 123456 % launch.SLURM_PORT_SPAN
    assert world.launcher == "slurm"
    other = launch.discover({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert other.master_port == world.master_port  # all tasks agree without talking


def test_batch_script_without_srun_is_single_process() -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n[1-2]"}
    assert launch.detect_launcher(env) == "single"


def test_slurm_before_mpi_unless_mpirun_runs_through_srun_proxies() -> None:
    srun_pmi = {"PMI_RANK": "3", "PMI_SIZE": "4", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
                "SLURM_STEP_ID": "0"}
    assert launch.detect_launcher(srun_pmi) == "slurm"  # srun --mpi=pmi2: same world
    proxies = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "SLURM_PROCID": "1",
               "SLURM_NTASKS": "2", "SLURM_STEP_ID": "1"}
    assert launch.detect_launcher(proxies) == "mpi"  # mpirun in an allocation
    assert launch.detect_launcher({"PMI_RANK": "0", "PMI_SIZE": "2"}) == "mpi"  # mpiexec


def test_mpi_discovery_on_a_real_communicator() -> None:
    from mpi4py import MPI

    world = launch.from_mpi(MPI.COMM_SELF)
    assert (world.rank, world.world_size, world.local_rank, world.nodes) == (0, 1, 0, 1)
    assert world.launcher == "mpi" and 0 < world.master_port < 65536
    assert world.master_addr  # rank 0's host name, broadcast over MPI


def test_emulated_nodes_group_consecutive_ranks() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "5", "BENSCALE_NODES": "4"}
    world = launch.discover(env)
    assert (world.nodes, world.local_world_size, world.node_rank) == (4, 2, 2)
    assert world.local_rank == 5 and world.emulated_nodes  # device still from the real rank


def test_emulated_nodes_must_divide_world() -> None:
    with pytest.raises(ConfigError, match="BENSCALE_NODES=3"):
        launch.discover({"RANK": "0", "WORLD_SIZE": "4", "BENSCALE_NODES": "3"})


def test_single_process_and_torch_env() -> None:
    world = launch.discover({})
    assert (world.rank, world.world_size, world.launcher) == (0, 1, "single")
    env = launch.torch_env(world)
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1"
    assert env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) == world.master_port


def test_mpi_world_disagreeing_with_the_launcher_is_refused(tiny_shards: Path,
                                                          tmp_path: Path) -> None:
    """An mpi4py of another MPI than the mpirun that started it sees a world of 1: simulated
    by an Open MPI variable around the pip mpich build, in a real process."""
    world = launch.World(0, 1, 0, 1, 1, 0, "h", 1, "mpi")
    with pytest.raises(ConfigError, match=r"world of 1 process\(es\), but the launcher "
                                          r"started 4 \(PMI_SIZE=4\)"):
        launch.check_mpi_world(world, {"PMI_SIZE": "4"})
    launch.check_mpi_world(world, {"PMI_SIZE": "1", "SLURM_NTASKS": "8"})  # agrees: fine
    env = launcher_env(OMPI_COMM_WORLD_SIZE="4", OMPI_COMM_WORLD_RANK="0")
    proc = subprocess.run([sys.executable, "-m", "benscale.cli", "train", "--data",
                           str(tiny_shards), "--out", str(tmp_path / "run"), "--set",
                           "global_batch=4"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "mpi4py sees a world of 1 process(es), but the launcher started 4" in proc.stderr
    assert not (tmp_path / "run").exists()
