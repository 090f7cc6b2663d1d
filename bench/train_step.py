"""Training step: benscale's engines against the bare libraries, and the engines at world size 2.

Same model (``benscale.train.model.build_model``: torchvision ResNet-50, 12 bands, 19
classes), same batch, optimizer (SGD momentum 0.9, weight decay 1e-4), loss
(BCE-with-logits), random in-memory tensors, same intra-op threads. "benscale" is the real
step of an epoch (``benscale.train.steps.train_micro_batches``: the engine, the phase
timers and the communication meter) on in-memory batches; the bare loops are what a user
would write with each library alone:

* bare PyTorch: ``zero_grad / forward / backward / step`` (``torch.autocast`` for bf16);
* bare DeepSpeed: ``deepspeed.initialize`` with the SAME DeepSpeed config benscale generates
  (ds_config.json, comms_logger included), then ``engine(x) / engine.backward / engine.step``;
* bare DDP: ``DistributedDataParallel(model)`` with its defaults and the plain loop.

World size 1 (one process, all cores): each comparison alternates single steps of the two
workloads in one process. World size 2 (gloo, cores / 2 threads per rank): every workload
runs in its own fresh pair of processes per round, rounds alternating the order, because
two engines sharing a process pair biased each other (docs/benchmarks.md); a round's figure
is the median of its single steps. Two findings without a goal: DeepSpeed at ZeRO 0 and 2
against DDP (the reason is in each engine's phase split: how much communication runs behind
backward), and what DeepSpeed's comms_logger (benscale's communication timing for that
engine) costs a bare DeepSpeed loop. Last, the split of a real epoch (data / compute / comm
/ optimizer) from the ``epochs.csv`` of a short ``benscale train`` run.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BenchFigure, Context, Stat, cli_env, rate_figure

NAME = "train_step"
KEYS = ("step_vs_bare_fp32", "step_vs_bare_bf16",
        "deepspeed_vs_bare_deepspeed_ws1", "ddp_vs_bare_ddp_ws1",
        "deepspeed_vs_bare_deepspeed_ws2", "ddp_vs_bare_ddp_ws2",
        "deepspeed_z0_vs_ddp_ws2", "deepspeed_z2_vs_ddp_ws2",
        "deepspeed_comms_logger_cost_ws2", "epoch_compute_fraction")
CHANNELS, CLASSES, PX = 12, 19, 120
#: Workloads of the world-size-2 rounds, each in its own process pair.
WS2_WORKLOADS = ("benscale-deepspeed", "bare-deepspeed", "benscale-ddp", "bare-ddp",
                 "benscale-deepspeed-z2", "bare-deepspeed-nolog")


# ---------------------------------------------------------------------------- workloads


def _init(rank: int, world_size: int, port: int, threads: int) -> Any:
    """Process group through benscale's own launch discovery and process-group start."""
    import torch

    from benscale.train import engine, world

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    _backend, device = engine.init_distributed(world.discover(), timeout_s=600)
    return device


def _config(engine: str, precision: str, zero_stage: int, global_batch: int) -> Any:
    from benscale.train import config as config_mod

    return config_mod.load(None, [f"engine={engine}", f"precision={precision}",
                                  f"zero_stage={zero_stage}", f"global_batch={global_batch}",
                                  "warmup_epochs=0", "epochs=1000"])


def _batch(per_rank: int, seed: int = 0) -> Any:
    """One batch of random 120 x 120 inputs and multi-hot labels (30 % positives)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(per_rank, CHANNELS, PX, PX, generator=gen)
    y = (torch.rand(per_rank, CLASSES, generator=gen) < 0.3).float()
    return x, y


class Harness:
    """benscale's step: engine, phase timers and communication meter, in-memory batch."""

    def __init__(self, engine: str, precision: str, zero_stage: int, global_batch: int,
                 device: Any) -> None:
        """Build the step context as ``benscale train`` does."""
        import torch.distributed as dist

        from benscale.train.steps import PhaseTimes, build_step_context

        cfg = _config(engine, precision, zero_stage, global_batch)
        batches = cfg.batches(dist.get_world_size())
        self.ctx, self.built = build_step_context(cfg, batches, 1000, device)
        self.inputs = _batch(batches.per_rank)
        self.times = PhaseTimes()

    def steps(self, n: int) -> None:
        """``n`` micro-steps through ``train_micro_batches``."""
        from benscale.train.steps import train_micro_batches

        x, y = self.inputs
        train_micro_batches(self.ctx, ((x, y, None, None) for _ in range(n)), self.times)


class BareLoop:
    """A plain PyTorch training step, optionally under DDP with its defaults."""

    def __init__(self, per_rank: int, precision: str, ddp: bool) -> None:
        """Model, optimizer and one fixed batch of random tensors."""
        import torch

        from benscale.train.model import build_model, loss_fn

        torch.manual_seed(0)
        model = build_model(CHANNELS, CLASSES)
        self.model = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)
        self.loss = loss_fn()
        self.x, self.y = _batch(per_rank)
        self.bf16 = precision == "bf16"

    def steps(self, n: int) -> None:
        """``n`` optimizer steps."""
        import torch

        self.model.train()
        for _ in range(n):
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(self.x)
            self.loss(out.float(), self.y).backward()
            self.opt.step()


class BareDeepSpeed:
    """``deepspeed.initialize`` with benscale's generated config, and the plain engine loop."""

    def __init__(self, global_batch: int, comms_logger: bool = True) -> None:
        """Same model, optimizer, config (and so batch) as the harness's DeepSpeed engine."""
        import deepspeed
        import torch
        import torch.distributed as dist

        from benscale.train.engine import ds_config
        from benscale.train.model import build_model, loss_fn

        cfg = _config("deepspeed", "fp32", 0, global_batch)
        config = ds_config(cfg, cfg.batches(dist.get_world_size()))
        if not comms_logger:
            config.pop("comms_logger", None)
        torch.manual_seed(0)
        model = build_model(CHANNELS, CLASSES)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config,
                                               dist_init_required=False)
        self.loss = loss_fn()
        self.x, self.y = _batch(config["train_micro_batch_size_per_gpu"])

    def steps(self, n: int) -> None:
        """``n`` optimizer steps."""
        self.engine.train()
        for _ in range(n):
            self.engine.backward(self.loss(self.engine(self.x).float(), self.y))
            self.engine.step()


def _make(name: str, global_batch: int, device: Any) -> Any:
    """The workload called ``name`` (WS2_WORKLOADS, or the world-size-1 ones)."""
    if name == "benscale-deepspeed":
        return Harness("deepspeed", "fp32", 0, global_batch, device)
    if name == "benscale-deepspeed-z2":
        return Harness("deepspeed", "fp32", 2, global_batch, device)
    if name == "benscale-ddp":
        return Harness("ddp", "fp32", 0, global_batch, device)
    if name == "bare-deepspeed":
        return BareDeepSpeed(global_batch)
    if name == "bare-deepspeed-nolog":
        return BareDeepSpeed(global_batch, comms_logger=False)
    if name == "bare-ddp":
        import torch.distributed as dist

        return BareLoop(global_batch // dist.get_world_size(), "fp32", ddp=True)
    raise ValueError(f"unknown workload {name!r}")


# ---------------------------------------------------------------------------- timing


def _one_step(fn: Any, distributed: bool) -> float:
    """Seconds for one step of ``fn``, ranks lined up before and after."""
    import torch.distributed as dist

    if distributed:
        dist.barrier()
    start = time.perf_counter()
    fn(1)
    if distributed:
        dist.barrier()
    return time.perf_counter() - start


def _alternate(fns: dict[str, Any], spec: dict[str, Any]) -> dict[str, list[float]]:
    """Warm up each, then ``repeats`` rounds of ``steps`` single steps per workload, the
    workloads in strict alternation (A B A B ...); a round's figure is its mean s/step.

    Single steps, because this machine's speed changes in spells of a few to some tens of
    seconds: adjacent single steps almost always share a spell. Strict alternation, because
    a block that directly followed one of its own workload ran slower than one that
    followed the other (docs/benchmarks.md), a bias from the order alone.
    """
    for fn in fns.values():
        fn(spec["warmup"])
    out: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(spec["repeats"]):
        spent = dict.fromkeys(fns, 0.0)
        for _ in range(spec["steps"]):
            for name, fn in fns.items():
                spent[name] += _one_step(fn, False)
        for name in fns:
            out[name].append(spent[name] / spec["steps"])
    return out


def single_worker(rank: int, spec: dict[str, Any]) -> None:
    """World size 1: each of benscale's engines against its bare loop, alternating steps."""
    device = _init(rank, 1, spec["port"], spec["threads"])
    batch = spec["batch"]
    result: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        ours = Harness("deepspeed", precision, 0, batch, device)
        bare = BareLoop(batch, precision, ddp=False)
        result[f"torch_{precision}"] = _alternate({"benscale": ours.steps,
                                                   "bare": bare.steps}, spec)
        del ours, bare
    ours = Harness("deepspeed", "fp32", 0, batch, device)
    bare_ds = BareDeepSpeed(batch)
    result["deepspeed"] = _alternate({"benscale": ours.steps, "bare": bare_ds.steps}, spec)
    del ours, bare_ds
    ours = Harness("ddp", "fp32", 0, batch, device)
    bare_ddp = BareLoop(batch, "fp32", ddp=True)
    result["ddp"] = _alternate({"benscale": ours.steps, "bare": bare_ddp.steps}, spec)
    Path(spec["out"]).write_text(json.dumps(result))


def pair_worker(rank: int, spec: dict[str, Any]) -> None:
    """World size 2, ONE workload (``spec["workload"]``) in a fresh process pair: seconds of
    each of ``steps`` single steps after warm-up, and the harness's phase split."""
    import torch.distributed as dist

    device = _init(rank, 2, spec["port"], spec["threads"])
    work = _make(spec["workload"], spec["batch"], device)
    work.steps(spec["warmup"])
    if isinstance(work, Harness):
        from benscale.train.steps import PhaseTimes

        work.times = PhaseTimes()
    result: dict[str, Any] = {
        "s_per_step": [_one_step(work.steps, True) for _ in range(spec["steps"])]}
    if isinstance(work, Harness):
        result["phases_s_per_step"] = {k: v / spec["steps"]
                                       for k, v in zip(work.times.names(), work.times.values(),
                                                       strict=True)}
        result["timing_method"] = work.built.comm.method
    if rank == 0:
        Path(spec["out"]).write_text(json.dumps(result))
    dist.barrier()


def ws2_rounds(spec: dict[str, Any]) -> dict[str, Any]:
    """Every world-size-2 workload in its own fresh process pair per round; rounds alternate
    the order (A B C .. | .. C B A | ...); a round's figure is the median of its steps."""
    out: dict[str, Any] = {"s_per_step": {w: [] for w in WS2_WORKLOADS}, "phases": {},
                           "steps_s": {w: [] for w in WS2_WORKLOADS}}
    for r in range(spec["repeats"]):
        order = WS2_WORKLOADS if r % 2 == 0 else WS2_WORKLOADS[::-1]
        for workload in order:
            got = _spawn(pair_worker, 2, {**spec, "workload": workload,
                                          "out": f"{spec['out']}.{workload}"})
            out["s_per_step"][workload].append(statistics.median(got["s_per_step"]))
            out["steps_s"][workload].append(got["s_per_step"])
            if "phases_s_per_step" in got:
                out["phases"].setdefault(workload, []).append(got["phases_s_per_step"])
                out.setdefault("timing_method", {})[workload] = got["timing_method"]
    return out


def _spawn(fn: Any, nprocs: int, spec: dict[str, Any]) -> dict[str, Any]:
    import torch.multiprocessing as mp

    from benscale.train.world import free_port

    spec = {**spec, "port": free_port()}
    mp.spawn(fn, args=(spec,), nprocs=nprocs, join=True)
    return json.loads(Path(spec["out"]).read_text())


# ---------------------------------------------------------------------------- a real run


def training_run(ctx: Context, data: Path) -> list[dict[str, str]]:
    """A short ``benscale train`` on the benchmark shards; returns the rows of epochs.csv."""
    run_dir = ctx.work / ("train-run-quick" if ctx.quick else "train-run")
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    world = 1 if ctx.quick else 2
    sets = [f"epochs={ctx.size(1, 3)}", f"global_batch={ctx.size(2, 16)}",
            f"limit_batches={ctx.size(1, 6)}", f"limit_eval_batches={ctx.size(1, 2)}",
            "workers=1", "checkpoint.enabled=false", "progress=false", "warmup_epochs=0",
            f"threads={max(1, (os.cpu_count() or 1) // world)}"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={world}"] if world > 1 else [sys.executable])
    cmd = [*launcher, "-m", "benscale.cli", "train", "--data", str(data), "--out", str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benscale train exited {proc.returncode}: {proc.stderr[-2000:]}")
    with (run_dir / "epochs.csv").open() as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- figures


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Measure the training-step figures (module docstring)."""
    from bench.loader import shards

    cores = os.cpu_count() or 1
    batch = ctx.size(2, 16)
    base = {"repeats": min(ctx.repeats, 8), "warmup": 1, "steps": ctx.size(1, 3),
            "batch": batch}
    single = _spawn(single_worker, 1, {**base, "threads": cores,
                                        "out": str(ctx.work / "train-single.json")})
    pair = ws2_rounds({**base, "warmup": 2,
                       "steps": ctx.size(1, 5), "threads": max(1, cores // 2),
                       "out": str(ctx.work / "train-pair.json")})
    ws2 = pair["s_per_step"]

    def ws2_figure(key: str, title: str, cand: str, base_name: str, baseline: str,
                   goal: float | None, note: str) -> BenchFigure:
        return rate_figure(key, title, [batch / s for s in ws2[cand]],
                           [batch / s for s in ws2[baseline]], base_name, "samples/s",
                           goal=goal, note=note)

    ws2_note = f"global batch {batch}, gloo, {max(1, cores // 2)} thread(s) per rank"
    figures = [
        _ws1_figure(single["torch_fp32"], "step_vs_bare_fp32", "fp32: benscale (deepspeed) "
                    "vs bare PyTorch", "bare PyTorch loop", batch, 0.95, ""),
        _ws1_figure(single["torch_bf16"], "step_vs_bare_bf16", "bf16: benscale (deepspeed) "
                    "vs bare PyTorch", "bare PyTorch loop", batch, 0.95,
                    "torch.autocast in both"),
        _ws1_figure(single["deepspeed"], "deepspeed_vs_bare_deepspeed_ws1",
                    "world size 1: benscale's deepspeed engine vs a bare DeepSpeed loop",
                    "bare DeepSpeed loop (same ds_config)", batch, 0.97, ""),
        _ws1_figure(single["ddp"], "ddp_vs_bare_ddp_ws1",
                    "world size 1: benscale's ddp engine vs a bare DDP loop", "bare DDP loop",
                    batch, 0.97, ""),
        ws2_figure("deepspeed_vs_bare_deepspeed_ws2", "world size 2: benscale's deepspeed "
                   "engine vs a bare DeepSpeed loop", "benscale-deepspeed",
                   "bare DeepSpeed loop (same ds_config)", "bare-deepspeed", 0.97, ws2_note),
        ws2_figure("ddp_vs_bare_ddp_ws2", "world size 2: benscale's ddp engine vs a bare DDP "
                   "loop", "benscale-ddp", "bare DDP loop", "bare-ddp", 0.97, ws2_note),
        ws2_figure("deepspeed_z0_vs_ddp_ws2", "world size 2: DeepSpeed ZeRO 0 vs DDP (both "
                   "through benscale)", "benscale-deepspeed", "benscale ddp", "benscale-ddp",
                   None, "a finding, no goal; the phase split in details says why"),
        ws2_figure("deepspeed_z2_vs_ddp_ws2", "world size 2: DeepSpeed ZeRO 2 (overlap_comm) "
                   "vs DDP (both through benscale)", "benscale-deepspeed-z2", "benscale ddp",
                   "benscale-ddp", None, "a finding, no goal"),
        ws2_figure("deepspeed_comms_logger_cost_ws2", "world size 2: bare DeepSpeed with its "
                   "comms_logger vs without", "bare-deepspeed", "bare DeepSpeed, no logger",
                   "bare-deepspeed-nolog", None,
                   "what benscale's communication timing for DeepSpeed costs (1: nothing)"),
    ]
    rows = training_run(ctx, shards(ctx, ctx.size(12, 2000)))
    figures.append(_epoch_figure(rows))
    details = {"single_process_s_per_step": single, "ws2": pair,
               "ws2_phase_split": {w: _median_phases(p) for w, p in pair["phases"].items()},
               "epochs_csv": rows, "epoch_split": _split(rows),
               "notes": [f"batch {batch}, {cores} threads (ws1) / {max(1, cores // 2)} per "
                         "rank (ws2), random in-memory tensors; s/step medians in the JSON."]}
    return figures, details


def _ws1_figure(times: dict[str, list[float]], key: str, title: str, baseline: str,
                batch: int, goal: float, note: str) -> BenchFigure:
    return rate_figure(key, title, [batch / s for s in times["benscale"]],
                       [batch / s for s in times["bare"]], baseline, "samples/s", goal=goal,
                       note=note)


def _median_phases(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per step of each phase over the rounds."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def _epoch_figure(rows: list[dict[str, str]]) -> BenchFigure:
    """Compute time as a fraction of the epoch, per epoch of the real run (first dropped)."""
    use = rows[1:] or rows
    compute = [float(r["compute_time_s"]) for r in use]
    epoch = [float(r["epoch_time_s"]) for r in use]
    return rate_figure("epoch_compute_fraction",
                       f"real run (world size {use[0]['world_size']}): compute share of "
                       "an epoch", compute, epoch, "epoch time", "s",
                       note="the other phases are in details.epoch_split")


def _split(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Median seconds and share of each phase over the epochs of the run (first dropped)."""
    use = rows[1:] or rows
    phases = ("data_time_s", "compute_time_s", "comm_time_s", "optimizer_time_s")
    out: dict[str, Any] = {}
    epoch = Stat.of([float(r["epoch_time_s"]) for r in use], "s").median
    for p in phases:
        med = Stat.of([float(r[p]) for r in use], "s").median
        out[p] = {"median_s": med, "share_of_epoch": med / epoch if epoch else None}
    out["other_s"] = epoch - sum(out[p]["median_s"] for p in phases)
    out["epoch_time_s"] = epoch
    return out
