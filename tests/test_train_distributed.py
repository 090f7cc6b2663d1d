"""Real multi-process training on CPU (gloo), both engines: torchrun, mpiexec, kill -9 and
resume, DeepSpeed stage 0 against DDP, ZeRO 2 and bf16 in sync.

All runs share one small setup (ResNet-50, global batch 4, two optimizer steps per epoch,
two epochs, OMP_NUM_THREADS=1 per rank) so that the whole file stays within a CI budget.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from benscale.files.run import read_event_log
from benscale.train.eventlog import rules_path
from benscale.train.world import free_port
from conftest import launcher_env

BIN = Path(sys.executable).parent
EPOCHS = 2
SETS = {"epochs": EPOCHS, "global_batch": 4, "limit_batches": 2, "workers": 0,
        "progress": "false", "seed": 11, "eval_batch_per_gpu": 16, "warmup_epochs": 0,
        "checkpoint.keep_last": 1, "test_on": "last", "threads": 1}


def _train_args(shards: Path, out: Path, **overrides: object) -> list[str]:
    sets = {**SETS, **overrides}
    args = ["-m", "benscale.cli", "train", "--data", str(shards), "--out", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def torchrun(shards: Path, out: Path, **overrides: object) -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}",
            *_train_args(shards, out, **overrides)]


def mpiexec(shards: Path, out: Path, **overrides: object) -> list[str]:
    return [str(BIN / "mpiexec"), "-n", "2", sys.executable, *_train_args(shards, out, **overrides)]


def single(shards: Path, out: Path, **overrides: object) -> list[str]:
    return [sys.executable, *_train_args(shards, out, **overrides)]


def run_ok(argv: list[str], timeout: float = 400) -> None:
    proc = subprocess.run(argv, env=launcher_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def final_state(run: Path) -> dict[str, torch.Tensor]:
    """The model state of the last checkpoint, whichever engine wrote it."""
    ckpt = run / "checkpoints"
    tag = (ckpt / "latest").read_text().strip()
    assert tag == f"epoch-{EPOCHS:04d}"
    deepspeed, ddp = ckpt / tag / "mp_rank_00_model_states.pt", ckpt / tag / "state.pt"
    return torch.load(deepspeed if deepspeed.is_file() else ddp, weights_only=False)["module"]


def parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trainable parameters of a state dict (BatchNorm running statistics left out)."""
    names = {n for n, _ in _resnet().named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def epochs_of(run: Path) -> list[int]:
    with (run / "epochs.csv").open() as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def shards(tiny_shards: Path) -> Path:
    return tiny_shards


@pytest.fixture(scope="module")
def torchrun_run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchrun") / "run"
    run_ok(torchrun(shards, out))
    return out


@pytest.fixture(scope="module")
def ddp_run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    run_ok(torchrun(shards, out, engine="ddp"))
    return out


@pytest.mark.slow
def test_torchrun_outputs_and_ranks_in_sync(torchrun_run: Path, shards: Path) -> None:
    record = json.loads((torchrun_run / "run.json").read_text())
    assert record["status"] == "ok"
    assert record["world"]["world_size"] == 2 and record["world"]["launcher"] == "torchrun"
    assert record["world"]["backend"] == "gloo"
    digests = record["consistency"]["param_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    manifest = json.loads((shards / "manifest.json").read_text())
    assert record["test"]["n_patches"] == manifest["splits"]["test"]["n_patches"]
    assert epochs_of(torchrun_run) == [1, 2]
    with (torchrun_run / "epochs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert float(row["comm_time_s"]) > 0 and float(row["samples_per_s"]) > 0
        assert float(row["epoch_time_s"]) >= float(row["epoch_time_s_mean"])
        assert int(row["samples"]) == 2 * 4
        # DeepSpeed's logged collectives are blocking: they fit inside the epoch and leave
        # compute time (a misread logger, e.g. summing its running totals, would not)
        assert 0 < float(row["comm_time_s"]) < float(row["epoch_time_s"])
        assert float(row["compute_time_s"]) > 0
    events = [e.key for e in read_event_log(torchrun_run)]
    assert events[0] == "submission_benchmark" and events[-1] == "run_stop"
    assert events.count("epoch_stop") == EPOCHS and "global_batch_size" in events
    assert sorted(p.name for p in (torchrun_run / "checkpoints").iterdir()) == \
        ["epoch-0002", "latest"]
    ds_config = json.loads((torchrun_run / "ds_config.json").read_text())
    assert ds_config["train_batch_size"] == 4 and ds_config["comms_logger"]["enabled"]
    assert record["engine"]["name"] == "deepspeed" and record["engine"]["config"] == ds_config
    assert record["timing"] == {"method": "deepspeed comms_logger (every collective blocking)",
                                "comm_measured": True}
    assert {r["engine"] for r in rows} == {"deepspeed"}
    assert {r["engine_version"] for r in rows} == {record["engine"]["version"]}
    with (torchrun_run / "per_class_ap.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == EPOCHS * 19


def mlperf_check(log: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """MLPerf's own compliance checker on ``log``, with benscale's rules for its benchmark."""
    return subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker",
                           "--usage", "training", "--config", str(rules_path()), str(log)],
                          cwd=workdir, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_event_log_passes_mlperf_compliance_checker(torchrun_run: Path, tmp_path: Path) -> None:
    log = torchrun_run / "mllog.txt"
    assert all(line.startswith(":::MLLOG ") for line in log.read_text().splitlines())
    proc = mlperf_check(log, tmp_path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr
    keys = {e.key for e in read_event_log(torchrun_run)}
    for key in ("submission_platform", "cache_clear", "init_start", "init_stop", "run_start",
                "eval_start", "eval_stop", "eval_accuracy", "train_samples", "eval_samples",
                "opt_name", "opt_base_learning_rate", "seed", "number_of_nodes",
                "accelerators_per_node"):
        assert key in keys, key
    # the checker is not a formality: a log that lost its run_stop fails it
    cut = tmp_path / "cut.txt"
    cut.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                           if '"key": "run_stop"' not in line))
    assert mlperf_check(cut, tmp_path).returncode != 0


@pytest.mark.slow
def test_ddp_reaches_deepspeed_stage0_parameters(torchrun_run: Path, ddp_run: Path) -> None:
    """Same model, data, optimizer and schedule through torch DDP and DeepSpeed ZeRO 0:
    after 4 fp32 steps at world size 2 the parameters are bit-identical (tolerance 0, as
    measured); BatchNorm running statistics differ, because DDP broadcasts rank 0's buffers
    before every forward (broadcast_buffers, its default) while DeepSpeed keeps each rank's."""
    record = json.loads((ddp_run / "run.json").read_text())
    assert record["status"] == "ok" and record["engine"]["name"] == "ddp"
    assert record["engine"]["library"] == "torch" and "bucket_cap_mb" in record["engine"]["config"]
    assert record["timing"]["method"].startswith("ddp comm hook")
    assert json.loads((ddp_run / "ddp_config.json").read_text()) == record["engine"]["config"]
    digests = record["consistency"]["param_sha256_by_rank"]
    assert digests[0] == digests[1]
    ddp, deepspeed = parameters(final_state(ddp_run)), parameters(final_state(torchrun_run))
    assert ddp.keys() == deepspeed.keys() and len(ddp) == 161
    for name, tensor in ddp.items():
        assert torch.equal(tensor, deepspeed[name]), name
    with (ddp_run / "epochs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # the hook saw every bucket's reduction
        assert row["engine"] == "ddp" and float(row["comm_time_s"]) > 0
        assert float(row["compute_time_s"]) > 0


@pytest.mark.slow
def test_mpiexec_equals_torchrun_and_single_process(torchrun_run: Path, shards: Path,
                                                    tmp_path: Path) -> None:
    """Same global batches: world 2 under mpiexec, and 1 process accumulating 2 micro-batches."""
    run_ok(mpiexec(shards, tmp_path / "mpi"))
    record = json.loads((tmp_path / "mpi" / "run.json").read_text())
    assert record["world"]["launcher"] == "mpi" and record["world"]["world_size"] == 2
    digests = record["consistency"]["param_sha256_by_rank"]
    assert digests[0] == digests[1]
    reference = final_state(torchrun_run)
    for name, tensor in final_state(tmp_path / "mpi").items():
        assert torch.equal(tensor, reference[name]), name  # same collectives, same bits

    run_ok(mpiexec(shards, tmp_path / "mpi-ddp", engine="ddp"))
    record = json.loads((tmp_path / "mpi-ddp" / "run.json").read_text())
    assert record["world"]["launcher"] == "mpi" and record["engine"]["name"] == "ddp"
    digests = record["consistency"]["param_sha256_by_rank"]
    assert digests[0] == digests[1]
    for name, tensor in parameters(final_state(tmp_path / "mpi-ddp")).items():
        assert torch.equal(tensor, reference[name]), name

    run_ok(single(shards, tmp_path / "single", grad_accumulation=2))
    single_state = final_state(tmp_path / "single")
    params = [n for n, _ in torch.nn.Module.named_parameters(_resnet())]
    initial, moved = _initial(), 0
    for name in params:
        torch.testing.assert_close(single_state[name], reference[name], rtol=1e-4, atol=1e-5)
        moved += not torch.equal(single_state[name], initial[name])
    assert moved == len(params)  # training changed every parameter


def _resnet() -> torch.nn.Module:
    from benscale.train.model import build_model

    return build_model(12, 19)


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(SETS["seed"])
    return _resnet().state_dict()


def _rank_pid(token: str, rank: int) -> int | None:
    """The pid of the worker with RANK=rank among the processes carrying ``token``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"BENSCALE_TEST_TOKEN={token}".encode() in environ and \
                f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def _wait_for_epoch_start(run: Path, epoch: int, proc: subprocess.Popen, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        if any(e.key == "epoch_start" and e.metadata["epoch_num"] == epoch
               for e in read_event_log(run)):
            return
        time.sleep(0.2)
    pytest.fail(f"epoch {epoch} did not start within {limit_s} s")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["deepspeed", "ddp"])
def test_kill_one_rank_fails_the_job_and_resume_is_bit_exact(
        engine: str, torchrun_run: Path, ddp_run: Path, shards: Path, tmp_path: Path) -> None:
    reference_run = torchrun_run if engine == "deepspeed" else ddp_run
    out = tmp_path / "run"
    token = uuid.uuid4().hex
    proc = subprocess.Popen(torchrun(shards, out, engine=engine),
                            env=launcher_env(BENSCALE_TEST_TOKEN=token),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_epoch_start(out, 2, proc, limit_s=300)
        time.sleep(0.5)
        victim = _rank_pid(token, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        proc.communicate(timeout=120)  # a dead rank must not hang the job
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (out / "checkpoints" / "latest").read_text().strip() == "epoch-0001", \
        "the kill should land in epoch 2, after the first checkpoint"
    assert epochs_of(out) == [1]

    run_ok(torchrun(shards, out, engine=engine))
    assert epochs_of(out) == [1, 2]  # no epoch twice after resume
    resumed, reference = final_state(out), final_state(reference_run)
    assert resumed.keys() == reference.keys()
    for name, tensor in resumed.items():
        assert torch.equal(tensor, reference[name]), name
    assert json.loads((out / "run.json").read_text())["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "zero_stage"), [("bf16", 0), ("bf16-deepspeed", 0),
                                                       ("fp32", 2)])
def test_deepspeed_modes_train_in_sync(shards: Path, tmp_path: Path, precision: str,
                                       zero_stage: int) -> None:
    """bf16 = autocast (fp32 weights and gradients); bf16-deepspeed = DeepSpeed's bf16 mode
    (bf16 weights); ZeRO 2 with DeepSpeed's overlap settings. All train and stay in sync."""
    out = tmp_path / f"{precision}-z{zero_stage}"
    run_ok(torchrun(shards, out, precision=precision, zero_stage=zero_stage))
    record = json.loads((out / "run.json").read_text())
    digests = record["consistency"]["param_sha256_by_rank"]
    assert record["status"] == "ok" and digests[0] == digests[1]
    with (out / "epochs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert 0 < float(row["train_loss"]) < 2 and float(row["comm_time_s"]) > 0
    state, initial = final_state(out), _initial()
    weights = state["fc.weight"]
    assert weights.dtype == (torch.bfloat16 if precision == "bf16-deepspeed" else torch.float32)
    assert not torch.equal(weights.float(), initial["fc.weight"])
    ds = json.loads((out / "ds_config.json").read_text())
    assert ("bf16" in ds) == (precision == "bf16-deepspeed")
    assert ds["zero_optimization"]["stage"] == zero_stage
    assert ds["zero_optimization"].get("overlap_comm", False) == (zero_stage > 0)
