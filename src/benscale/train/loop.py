"""A training run: discovery, checks, engine, epochs, checkpoints, test, outputs.

The order matters for users: every check that can fail (config, batch split, shards,
statistics) runs BEFORE the process group and the model exist, so mistakes cost seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from benscale import provenance
from benscale.atomic import write_json
from benscale.bigearthnet import BAND_SETS
from benscale.errors import DataError
from benscale.files import run as run_files
from benscale.files.batches import BatchSplit
from benscale.files.run import (
    BatchRecord,
    BestEpoch,
    EngineRecord,
    EpochRow,
    HoldoutEvaluation,
    RunRecord,
    RuntimeRecord,
    TimingRecord,
    WorldRecord,
)
from benscale.train import checkpoint, data, engine, eventlog, metrics, runtime
from benscale.train.config import TrainConfig
from benscale.train.runtime import RuntimeSettings
from benscale.train.steps import (
    build_step_context,
    predict,
    reduce_over_ranks,
    sum_over_ranks,
    sync_batchnorm_stats,
    train_micro_batches,
)
from benscale.train.timing import PhaseTimes
from benscale.train.world import World, discover

log = logging.getLogger("benscale.train")


@dataclass
class Run:
    """State of one run shared by the phases below."""

    config: TrainConfig
    data_dir: Path
    run_dir: Path
    world: World
    batches: BatchSplit
    backend: str
    device: torch.device
    hosts: list[str]
    runtime: RuntimeRecord
    host_details: tuple[provenance.HostInfo, ...] = ()

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory."""
        return self.world.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        """Where the engine's checkpoints go."""
        return self.run_dir / run_files.CHECKPOINTS


def seed_everything(seed: int) -> None:
    """Same seed on every rank: identical initial weights (DeepSpeed also broadcasts them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gather_hosts(world: World) -> tuple[World, list[str], tuple[provenance.HostInfo, ...]]:
    """Host names of all ranks, and each distinct host as its ranks see it; without
    BENSCALE_NODES, nodes = distinct hosts."""
    infos: list[Any] = [None] * world.world_size
    # Slurm's node name (HostInfo.hostname): equal to the host name on a real cluster, and
    # what tells the fake nodes of a single-host test cluster (tools/local-slurm) apart.
    dist.all_gather_object(infos, provenance.host_info())
    hosts = [info.hostname for info in infos]
    if not world.emulated_nodes:
        distinct = list(dict.fromkeys(hosts))
        world = replace(world, nodes=len(distinct), node_rank=distinct.index(hosts[world.rank]),
                        local_world_size=world.world_size // len(distinct))
    details = tuple({info.hostname: info for info in infos}.values())
    return world, hosts, details


def start(config: TrainConfig, data_dir: Path, run_dir: Path) -> Run:
    """Checks, then the process group; raises ConfigError/DataError before any training."""
    world = discover()
    batches = config.batches(world.world_size)
    data.check_data(data_dir, config.bands, config.num_classes)
    backend, device = engine.init_distributed(world, config.timeout_s)
    world, hosts, details = gather_hosts(world)
    settings = RuntimeSettings(config.threads, config.interop_threads, config.deterministic,
                               config.matmul_precision, config.cudnn_benchmark)
    record = runtime.apply(settings, ranks_on_host=hosts.count(hosts[world.rank]),
                           cuda=device.type == "cuda")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return Run(config, data_dir, run_dir, world, batches, backend, device, hosts, record,
               details)


def world_record(run: Run) -> WorldRecord:
    """The ``world`` block of run.json."""
    return WorldRecord(
        world_size=run.world.world_size, nodes=run.world.nodes,
        gpus_per_node=run.world.local_world_size, hosts=tuple(sorted(set(run.hosts))),
        launcher=run.world.launcher, backend=run.backend, device=str(run.device),
        emulated_nodes=run.world.emulated_nodes, master_addr=run.world.master_addr,
        master_port=run.world.master_port, rank_hosts=tuple(run.hosts))


class Trainer:
    """Epoch loop of one run (rank-symmetric; rank 0 writes files)."""

    def __init__(self, run: Run) -> None:
        """Datasets, model, engine, and the run directory's static files."""
        self.run = run
        cfg = run.config
        self.mllog = None
        if run.is_main:  # initialisation starts now, for the event log
            run.run_dir.mkdir(parents=True, exist_ok=True)
            self.mllog = eventlog.open_log(run.run_dir / run_files.EVENT_LOG)
            if checkpoint.latest_tag(run.ckpt_dir) is None:
                eventlog.log_init_start(self.mllog)
        seed_everything(cfg.seed)
        self.train_set = self.dataset("train", augment=cfg.augment)
        self.val_set = self.dataset("validation")
        b = run.batches
        self.steps = data.steps_per_epoch(len(self.train_set), b, cfg.limit_batches)
        if self.steps == 0:
            raise DataError(f"{run.data_dir}: the train split has {len(self.train_set)} "
                            f"patches, fewer than one global batch of {b.global_batch}; "
                            "lower the batch or extract more patches")
        normalisation = data.Normalisation.of(run.data_dir, BAND_SETS[cfg.bands], run.device)
        self.ctx, built = build_step_context(cfg, b, self.steps, run.device, normalisation)
        self.engine = EngineRecord(built.name, built.library, built.version, built.config)
        self.timing = TimingRecord(built.comm.method, built.comm.measures)
        self.lr = engine.peak_lr(cfg, b.global_batch)
        self.eval_batch = cfg.eval_batch_per_gpu or b.per_rank
        self.best = BestEpoch()
        self.consistency: dict[str, Any] = {}

    def dataset(self, split: str, augment: bool = False) -> data.PatchDataset:
        """The dataset of ``split`` for this run's bands, classes and seed."""
        cfg = self.run.config
        return data.PatchDataset(self.run.data_dir, split, data.DatasetOptions(
            bands=BAND_SETS[cfg.bands], num_classes=cfg.num_classes, seed=cfg.seed,
            augment=augment))

    # ----------------------------------------------------------------- run directory
    def write_run_json(self, status: str, test: HoldoutEvaluation | None = None) -> None:
        """run.json: resolved config, world, provenance, status, test metrics, tags."""
        if not self.run.is_main:
            return
        cfg = self.run.config
        config = cfg.to_dict()
        prov = provenance.collect(config, seeds={"seed": cfg.seed},
                                  hosts=tuple(sorted(set(self.run.hosts))),
                                  host_details=self.run.host_details)
        b = self.run.batches
        RunRecord(
            config=config, world=world_record(self.run),
            batches=BatchRecord(b.global_batch, b.per_rank, b.grad_accumulation, self.steps),
            provenance=prov, status=status, test=test, best=self.best,
            tags=dict(cfg.tags), engine=self.engine, timing=self.timing,
            runtime=self.run.runtime, consistency=self.consistency,
        ).write(self.run.run_dir)

    def open_outputs(self, resumed_from: int) -> None:
        """The engine's config file, run.json (running), event log header; drop CSV rows
        past the resume point."""
        if not self.run.is_main:
            return
        run_dir = self.run.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / run_files.ENGINE_CONFIGS[self.engine.name], self.engine.config)
        self.write_run_json("running")
        run_files.truncate_after(run_dir, resumed_from)
        world, b = self.run.world, self.run.batches
        shape = eventlog.RunShape(
            global_batch=b.global_batch, world_size=world.world_size, nodes=world.nodes,
            accelerators_per_node=world.local_world_size,
            train_samples=self.steps * b.global_batch, eval_samples=len(self.val_set),
            peak_lr=self.lr, platform=platform_name(self.run))
        eventlog.log_run_start(self.mllog, self.run.config, shape, resumed_from)

    def event(self, log: Any, *args: Any) -> None:
        """One event-log call on rank 0 (``log(mllogger, *args)``)."""
        if self.run.is_main:
            log(self.mllog, *args)

    # ----------------------------------------------------------------- phases
    def resume(self) -> int:
        """Load the latest checkpoint, if any; returns the last completed epoch (0: none)."""
        client = checkpoint.load(self.ctx.engine, self.run.ckpt_dir, self.run.world.rank)
        if client is None:
            return 0
        best = client.get("best") or {}
        self.best = BestEpoch(best.get("epoch"), best.get("val_map_macro"))
        log.info("resumed from %s (epoch %d)", checkpoint.latest_tag(self.run.ckpt_dir),
                 client["epoch"])
        return int(client["epoch"])

    def train_epoch(self, epoch: int) -> tuple[PhaseTimes, float, int]:
        """One epoch on this rank's batches; returns (times, loss sum, samples)."""
        cfg = self.run.config
        self.train_set.set_epoch(epoch)
        batches = data.train_batches(len(self.train_set), self.run.batches,
                                     self.run.world.rank, self.run.world.world_size,
                                     cfg.seed, epoch, cfg.limit_batches)
        loader = data.device_batches(data.loader(self.train_set, batches, cfg.workers,
                                                 self.run.device.type == "cuda"),
                                     self.run.device)
        times = PhaseTimes()
        show = self.run.is_main and cfg.progress
        with tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", disable=not show,
                  unit="batch", leave=False) as bar:
            loss_sum, samples = train_micro_batches(self.ctx, loader, times, bar)
        return times, loss_sum, samples

    def evaluate(self, split_set: data.PatchDataset) -> tuple[dict[str, float], np.ndarray]:
        """Metrics over the FULL split (gathered from all ranks), with the loss."""
        cfg = self.run.config
        batches = data.eval_batches(len(split_set), self.run.world.rank,
                                    self.run.world.world_size, self.eval_batch,
                                    cfg.limit_eval_batches)
        loader = data.device_batches(data.loader(split_set, batches, cfg.workers,
                                                 self.run.device.type == "cuda"),
                                     self.run.device)
        logits, targets = predict(self.ctx, loader)
        scores, ap = metrics.evaluate(targets, logits)
        scores["loss"] = float(self.ctx.loss_fn(torch.from_numpy(logits),
                                                torch.from_numpy(targets)))
        scores["n_patches"] = len(targets)
        return scores, ap

    def save(self, epoch: int) -> float:
        """Checkpoint the end of ``epoch`` and prune old ones; returns seconds taken."""
        cfg = self.run.config
        if not cfg.checkpoint.enabled:
            return 0.0
        start = time.perf_counter()
        checkpoint.save(self.ctx.engine, self.run.ckpt_dir, epoch,
                        {"epoch": epoch, "best": {"epoch": self.best.epoch,
                                                  "val_map_macro": self.best.val_map_macro}},
                        self.run.world.rank)
        dist.barrier()
        if self.run.is_main:
            protect = {checkpoint.tag(self.best.epoch)} if (
                cfg.test_on == "best" and self.best.epoch) else set()
            checkpoint.prune(self.run.ckpt_dir, cfg.checkpoint.keep_last, protect)
        dist.barrier()
        return time.perf_counter() - start

    def record_epoch(self, epoch: int, times: PhaseTimes, loss: float, samples: int,
                     val: dict[str, float], ap: np.ndarray, eval_s: float,
                     ckpt_s: float) -> None:
        """Reduce timings over ranks and (rank 0) write the epoch's CSV rows and events."""
        high, mean = reduce_over_ranks(times.values(), self.run.device)
        if not self.run.is_main:
            return
        worst = dict(zip(PhaseTimes.names(), high, strict=True))
        avg = dict(zip(PhaseTimes.names(), mean, strict=True))
        epoch_s = worst["epoch_time_s"]
        row = EpochRow(
            epoch=epoch, world_size=self.run.world.world_size, nodes=self.run.world.nodes,
            global_batch=self.run.batches.global_batch,
            **worst, **{f"{k}_mean": v for k, v in avg.items()},
            samples_per_s=samples / epoch_s if epoch_s else 0.0,
            train_loss=loss, val_loss=val["loss"],
            **{f"val_{m}": val[m] for m in run_files.METRICS},
            lr=self.ctx.engine.get_lr()[0], steps=self.steps, samples=samples,
            eval_time_s=eval_s, checkpoint_time_s=ckpt_s, engine=self.engine.name,
            engine_version=self.engine.version,
            engine_config=json.dumps(self.engine.config, sort_keys=True,
                                     separators=(",", ":")))
        run_files.append_epoch(self.run.run_dir, row)
        run_files.append_class_ap(self.run.run_dir, epoch, self.val_set.shards.classes,
                                  list(ap))

    def fit(self) -> HoldoutEvaluation:
        """Resume, train the remaining epochs, test; returns the test result."""
        done = self.resume()
        self.open_outputs(done)
        cfg = self.run.config
        for epoch in range(done + 1, cfg.epochs + 1):
            self.event(eventlog.log_epoch_start, epoch)
            times, loss_sum, samples = self.train_epoch(epoch)
            loss_sum, total = sum_over_ranks([loss_sum, samples], self.run.device)
            self.event(eventlog.log_epoch_stop, epoch, total / times.epoch_time_s
                       if times.epoch_time_s else 0.0)
            sync_batchnorm_stats(self.ctx.engine.module)
            self.event(eventlog.log_eval, epoch, 0.0, 0.0, True)
            t0 = time.perf_counter()
            val, ap = self.evaluate(self.val_set)
            eval_s = time.perf_counter() - t0
            self.event(eventlog.log_eval, epoch, val["map_macro"], val["map_micro"], False)
            if self.best.val_map_macro is None or val["map_macro"] > self.best.val_map_macro:
                self.best = BestEpoch(epoch, val["map_macro"])
            ckpt_s = self.save(epoch)
            self.record_epoch(epoch, times, loss_sum / max(total, 1), int(total), val, ap,
                              eval_s, ckpt_s)
        return self.test()

    def test(self) -> HoldoutEvaluation:
        """Evaluate the test split with the best (or last) checkpoint's weights."""
        cfg = self.run.config
        name = checkpoint.latest_tag(self.run.ckpt_dir) if cfg.checkpoint.enabled else None
        if cfg.test_on == "best" and self.best.epoch and name:
            wanted = checkpoint.tag(self.best.epoch)
            if wanted != name and (self.run.ckpt_dir / wanted).is_dir():
                checkpoint.load(self.ctx.engine, self.run.ckpt_dir, self.run.world.rank, wanted)
                name = wanted
        scores, _ = self.evaluate(self.dataset("test"))
        return HoldoutEvaluation(**{m: scores[m] for m in run_files.METRICS}, loss=scores["loss"],
                          n_patches=scores["n_patches"],
                          checkpoint=name or "final weights (checkpoints disabled)",
                          test_on=cfg.test_on)


def platform_name(run: Run) -> str:
    """``<nodes>x<accelerator>``: what the event log's ``submission_platform`` says."""
    if run.device.type == "cuda":
        accelerator = f"{run.world.local_world_size}x{torch.cuda.get_device_name(run.device)}"
    else:
        accelerator = f"{run.world.local_world_size} CPU rank(s) on {provenance.cpu_model()}"
    return f"{run.world.nodes}x({accelerator})"


def parameter_digests(model: torch.nn.Module) -> list[str]:
    """SHA-256 of this rank's parameters, gathered from every rank (equal = in sync)."""
    digest = hashlib.sha256()
    for param in model.parameters():
        digest.update(param.detach().float().cpu().numpy().tobytes())
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, digest.hexdigest())
    return out


def train(config: TrainConfig, data_dir: Path, run_dir: Path) -> HoldoutEvaluation:
    """Run (or resume) a whole training run; returns the test result.

    Any exception on this rank propagates (non-zero exit); rank 0 first marks run.json
    ``failed``. Peers then fail on their next collective (socket closed, or ``timeout_s``).
    """
    run = start(config, data_dir, run_dir)
    trainer = Trainer(run)
    try:
        test = trainer.fit()
        trainer.consistency = {"param_sha256_by_rank":
                               parameter_digests(trainer.ctx.engine.module)}
    except BaseException:
        if run.is_main:
            trainer.write_run_json("failed")
            eventlog.log_run_stop(trainer.mllog, False, None)
            eventlog.close_log(trainer.mllog)
        raise
    if run.is_main:
        trainer.write_run_json("ok", test)
        eventlog.log_run_stop(trainer.mllog, True, test.map_macro)
        eventlog.close_log(trainer.mllog)
    dist.barrier()
    dist.destroy_process_group()
    return test
