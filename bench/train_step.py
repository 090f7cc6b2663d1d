"""Training step: benscale's DeepSpeed step against bare PyTorch, and where an epoch goes.

Same model (``benscale.train.model.build_model``: torchvision ResNet-50, 12 bands, 19
classes), same batch, optimizer (SGD momentum 0.9, weight decay 1e-4), loss
(BCE-with-logits), random in-memory tensors, same intra-op threads:

* single process, fp32 and bf16: ``benscale.train.steps.train_micro_batches`` on in-memory
  batches (the real step of an epoch through the real DeepSpeed engine and its phase
  timers) vs a bare loop
  (``zero_grad / forward / backward / step``); bf16 is ``torch.autocast`` in both
  (benscale's ``precision: bf16``), and DeepSpeed's bf16 mode (``bf16-deepspeed``: bf16
  weights) is measured against the same bare loop as a third figure;
* world size 2 on one machine (gloo, one thread per rank): benscale's engine vs
  ``torch.nn.parallel.DistributedDataParallel``, same global batch, each engine in a fresh
  pair of processes per round, rounds alternating which engine goes first
  (:func:`engines_ws2`); plus the same step with no communication at all (each rank
  alone) and one all-reduce of every gradient alone (what communication costs);
* how much of the communication overlaps compute, per engine, from timestamps
  (:class:`CommTimeline`): when the backward pass produced its last gradient, and when
  each gradient reduction ran (DDP: from a comm hook doing what DDP's default hook does,
  all-reduce and average; benscale: every interval its own CommTimer records, i.e. each
  bucket's asynchronous all-reduce and the backward epilogue's wait). The hidden part is
  the communication that ran before the last gradient existed;
* the split of a real epoch (data / compute / comm / optimizer), read from the
  ``epochs.csv`` of a short ``benscale train`` run on shards of the real samples.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Context, Figure, Stat, rate_figure

NAME = "train_step"
KEYS = ("step_vs_bare_fp32", "step_vs_bare_bf16", "step_vs_bare_bf16_deepspeed",
        "deepspeed_ws2_vs_ddp_ws2",
        "deepspeed_ws2_comm_overlap", "ddp_ws2_comm_overlap", "epoch_compute_fraction")
#: Steps whose communication timeline is recorded per engine (after the timed repeats).
TIMELINE_STEPS = 4
CHANNELS, CLASSES, PX = 12, 19, 120


# ---------------------------------------------------------------------------- workers


def _init(rank: int, world_size: int, port: int, threads: int) -> Any:
    """Process group through benscale's own launch discovery and DeepSpeed init."""
    import torch

    from benscale.train import engine, world

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    _backend, device = engine.init_distributed(world.discover(), timeout_s=600)
    return device


def _benscale_ctx(precision: str, global_batch: int, steps: int, device: Any) -> Any:
    import torch.distributed as dist

    from benscale.train import config as config_mod
    from benscale.train.steps import build_step_context

    cfg = config_mod.load(None, [f"precision={precision}", f"global_batch={global_batch}",
                                 "warmup_epochs=0", "epochs=1000"])
    batches = cfg.batches(dist.get_world_size())
    ctx, _ = build_step_context(cfg, batches, steps_per_epoch=1000, device=device)
    return ctx, batches.per_rank


def synthetic_batch(batch: int, seed: int = 0) -> Any:
    """One batch of random 120 x 120 inputs and multi-hot labels (30 % positives)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, CHANNELS, PX, PX, generator=gen)
    y = (torch.rand(batch, CLASSES, generator=gen) < 0.3).float()
    return x, y


def synthetic_steps(ctx: Any, inputs: Any, steps: int) -> None:
    """``steps`` micro-steps of benscale's real step (engine, timers) on one in-memory
    batch, made once outside, as the bare loop's is."""
    from benscale.train.steps import PhaseTimes, train_micro_batches

    x, y = inputs
    train_micro_batches(ctx, ((x, y, None, None) for _ in range(steps)), PhaseTimes())


class BareLoop:
    """The reference: a plain PyTorch training step, optionally under DDP or autocast."""

    def __init__(self, batch: int, precision: str, ddp: bool) -> None:
        """Build model, optimizer and one fixed batch of random tensors."""
        import torch

        from benscale.train.model import build_model, loss_fn

        torch.manual_seed(0)
        model = build_model(CHANNELS, CLASSES)
        if ddp:
            model = torch.nn.parallel.DistributedDataParallel(model)
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)
        self.loss = loss_fn()
        self.x = torch.randn(batch, CHANNELS, PX, PX)
        self.y = (torch.rand(batch, CLASSES) < 0.3).float()
        self.bf16 = precision.startswith("bf16")  # the bare loop: autocast for both

    def steps(self, n: int) -> None:
        """``n`` optimizer steps."""
        import torch

        self.model.train()
        for _ in range(n):
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(self.x)
            loss = self.loss(out.float(), self.y)
            loss.backward()
            self.opt.step()


class CommTimeline:
    """Per step: when the last gradient was produced, and when gradient reduction ran.

    ``hidden_and_total`` gives the seconds of (the union of) the communication intervals
    that lay before the last gradient, i.e. overlapped the backward pass, and in all.
    """

    def __init__(self, model: Any) -> None:
        """Timestamp every parameter's gradient as it is accumulated."""
        self.last_grad = 0.0
        self.comm: list[tuple[float, float]] = []
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _grad_ready(self, _param: Any) -> None:
        self.last_grad = time.perf_counter()

    def tap(self, record: Any) -> Any:
        """``record(start, end)`` (benscale's CommTimer) that also keeps each interval here."""
        def both(start: float, end: float) -> None:
            self.comm.append((start, end))
            record(start, end)
        return both

    def ddp_hook(self, world_size: int) -> Any:
        """A DDP comm hook equal to the default (all-reduce, average), recording intervals."""
        import torch.distributed as dist

        # No annotations: DDP checks them against its own types, which the postponed
        # (string) annotations of this module would fail.
        def hook(_state, bucket):
            start = time.perf_counter()
            buffer = bucket.buffer().div_(world_size)
            future = dist.all_reduce(buffer, async_op=True).get_future()

            def done(fut: Any) -> Any:
                self.comm.append((start, time.perf_counter()))
                return fut.value()[0]

            return future.then(done)

        return hook

    def take(self) -> tuple[float, float]:
        """(hidden, total) communication seconds since the last call."""
        merged: list[list[float]] = []
        for start, end in sorted(self.comm):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        total = sum(e - s for s, e in merged)
        hidden = sum(max(0.0, min(e, self.last_grad) - s) for s, e in merged)
        self.comm = []
        return hidden, total


def _timeline(run_step: Any, timeline: CommTimeline, steps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"hidden_s": [], "comm_s": []}
    for _ in range(steps):
        timeline.take()
        run_step(1)
        hidden, total = timeline.take()
        out["hidden_s"].append(hidden)
        out["comm_s"].append(total)
    return out


def _block(fn: Any, steps: int, distributed: bool) -> float:
    """Seconds for ``fn(steps)``, ranks lined up before and after."""
    import torch.distributed as dist

    if distributed:
        dist.barrier()
    start = time.perf_counter()
    fn(steps)
    if distributed:
        dist.barrier()
    return time.perf_counter() - start


def single_worker(rank: int, spec: dict[str, Any]) -> None:
    """World size 1: benscale's step vs the bare loop, per precision, alternating."""
    device = _init(rank, 1, spec["port"], spec["threads"])
    batch, steps = spec["batch"], spec["steps"]
    result: dict[str, Any] = {}
    for precision in spec["precisions"]:
        ctx, per_rank = _benscale_ctx(precision, batch, steps, device)
        bare = BareLoop(batch, precision, ddp=False)

        inputs = synthetic_batch(per_rank)

        def ours(n: int, ctx: Any = ctx, inputs: Any = inputs) -> None:
            synthetic_steps(ctx, inputs, n)

        result[precision] = _alternate({"benscale": ours, "bare": bare.steps}, spec, False)
        del ctx, bare
    Path(spec["out"]).write_text(json.dumps(result))


def engine_pair_worker(rank: int, spec: dict[str, Any]) -> None:
    """World size 2, ONE engine (``spec["engine"]``: deepspeed or ddp) in a fresh process pair.

    Seconds of each of ``steps`` single steps after warm-up; then, if asked, the
    communication timeline of a few more steps.
    """
    import torch.distributed as dist

    device = _init(rank, 2, spec["port"], spec["threads"])
    if spec["engine"] == "deepspeed":
        ctx, per_rank = _benscale_ctx("fp32", spec["batch"], spec["steps"], device)
        inputs = synthetic_batch(per_rank)

        def run_steps(n: int) -> None:
            synthetic_steps(ctx, inputs, n)

        def timeline() -> CommTimeline:
            line = CommTimeline(ctx.engine.module)
            ctx.comm.record = line.tap(ctx.comm.record)
            return line
    else:
        ddp = BareLoop(spec["batch"] // dist.get_world_size(), "fp32", ddp=True)
        run_steps = ddp.steps

        def timeline() -> CommTimeline:
            line = CommTimeline(ddp.model)
            ddp.model.register_comm_hook(None, line.ddp_hook(dist.get_world_size()))
            return line
    run_steps(spec["warmup"])
    result: dict[str, Any] = {
        "s_per_step": [_block(run_steps, 1, True) for _ in range(spec["steps"])]}
    if spec["timeline"]:  # hooks only now, so that they cost the timed steps nothing
        result["timeline"] = _timeline(run_steps, timeline(), TIMELINE_STEPS)
    if rank == 0:
        Path(spec["out"]).write_text(json.dumps(result))
    dist.barrier()


def reference_pair_worker(rank: int, spec: dict[str, Any]) -> None:
    """World size 2: the DDP step's parts, no communication at all vs one all-reduce alone."""
    import torch
    import torch.distributed as dist

    _init(rank, 2, spec["port"], spec["threads"])
    alone = BareLoop(spec["batch"] // dist.get_world_size(), "fp32", ddp=False)
    flat = torch.zeros(sum(p.numel() for p in alone.model.parameters()))

    def allreduce(n: int) -> None:
        for _ in range(n):
            dist.all_reduce(flat)

    result = _alternate({"no_comm": alone.steps, "allreduce": allreduce}, spec, True)
    if rank == 0:
        Path(spec["out"]).write_text(json.dumps(result))
    dist.barrier()


def engines_ws2(spec: dict[str, Any]) -> dict[str, Any]:
    """DeepSpeed vs DDP at world size 2, each engine in its own fresh process pair.

    Rounds alternate the engines in the order A B | B A | A B ..., one new pair of
    processes per engine and round; a round's figure is the median of its single steps.
    Both engines in ONE process pair, in blocks of 3 steps (this benchmark before
    2026-12-02 evening), measured DeepSpeed at 0.91-0.92 of DDP in every run, while fresh
    pairs, and single interleaved steps, put them level: running one engine's steps
    right after the other's in the same processes was itself a bias, and a training job
    runs one engine per process. The last round also records each engine's comm timeline.
    """
    import statistics

    engines = ("deepspeed", "ddp")
    out: dict[str, Any] = {e: [] for e in engines}
    out["steps_s"] = {e: [] for e in engines}
    for r in range(spec["repeats"]):
        last = r == spec["repeats"] - 1
        for engine in engines if r % 2 == 0 else engines[::-1]:
            got = _spawn(engine_pair_worker, 2, {**spec, "engine": engine, "timeline": last,
                                                  "out": f"{spec['out']}.{engine}"})
            out[engine].append(statistics.median(got["s_per_step"]))
            out["steps_s"][engine].append(got["s_per_step"])
            if last:
                out.setdefault("timeline", {})[engine] = got["timeline"]
    out.update(_spawn(reference_pair_worker, 2, {**spec, "out": f"{spec['out']}.reference"}))
    return out


def _alternate(fns: dict[str, Any], spec: dict[str, Any], distributed: bool
               ) -> dict[str, list[float]]:
    """Warm up each, then ``repeats`` rounds of ``steps`` single steps per workload, the
    workloads in strict alternation (A B A B ...); a round's figure is its mean s/step.

    Single steps, because this machine's speed changes in spells of a few to some tens
    of seconds (the same step at 1.25 or 1.5 s, bf16 at 0.65 or 0.95 s, 2026-12-02):
    adjacent single steps almost always share a spell, blocks of 3 steps often did not,
    and the ratios of one run then ranged from 0.67 to 1.46. Strict alternation, because a
    block that directly followed a block of its own workload ran 3-10 % slower than one
    that followed the other (2026-12-02), a bias from the order alone.
    """
    for fn in fns.values():
        fn(spec["warmup"])
    out: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(spec["repeats"]):
        spent = dict.fromkeys(fns, 0.0)
        for _ in range(spec["steps"]):
            for name, fn in fns.items():
                spent[name] += _block(fn, 1, distributed)
        for name in fns:
            out[name].append(spent[name] / spec["steps"])
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benscale train exited {proc.returncode}: {proc.stderr[-2000:]}")
    with (run_dir / "epochs.csv").open() as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- figures


def run(ctx: Context) -> tuple[list[Figure], dict[str, Any]]:
    """Measure the training-step figures (module docstring)."""
    from bench.loader import shards

    cores = os.cpu_count() or 1
    # At most 8 repeats of 3 (single) steps: a ResNet-50 step takes about a second on a CPU, and
    # on 2 shared cores single repeats scatter by +-10 %.
    base = {"repeats": min(ctx.repeats, 8), "warmup": 1, "steps": ctx.size(1, 3)}
    single = _spawn(single_worker, 1, {**base, "batch": ctx.size(2, 16), "threads": cores,
                                        "precisions": ["fp32", "bf16", "bf16-deepspeed"],
                                        "out": str(ctx.work / "train-single.json")})
    pair = engines_ws2({**base, "warmup": 2, "steps": ctx.size(1, 5), "batch": ctx.size(2, 16),
                        "threads": max(1, cores // 2),
                        "out": str(ctx.work / "train-pair.json")})
    batch = ctx.size(2, 16)
    figures = [_step_figure(single[p], p, batch) for p in ("fp32", "bf16", "bf16-deepspeed")]
    figures.append(rate_figure(
        "deepspeed_ws2_vs_ddp_ws2", "world size 2: benscale (DeepSpeed) vs DDP",
        [batch / s for s in pair["deepspeed"]], [batch / s for s in pair["ddp"]],
        "torch DDP", "samples/s", goal=0.95,
        note=f"global batch {batch}, gloo, {max(1, cores // 2)} thread(s) per rank"))
    figures += [_overlap_figure(pair["timeline"][engine], engine)
                for engine in ("deepspeed", "ddp")]
    rows = training_run(ctx, shards(ctx, ctx.size(12, 2000)))
    figures.append(_epoch_figure(rows))
    details = {"single_process_s_per_step": single, "ws2_s_per_step": pair,
               "epochs_csv": rows, "epoch_split": _split(rows),
               "notes": [f"batch {batch}, {cores} threads (ws1) / {max(1, cores // 2)} per "
                         "rank (ws2), random in-memory tensors; s/step medians in the JSON."]}
    return figures, details


_PRECISION_NOTES = {"fp32": "", "bf16": "torch.autocast in both",
                    "bf16-deepspeed": "DeepSpeed's bf16 weights vs torch.autocast"}


def _step_figure(times: dict[str, list[float]], precision: str, batch: int) -> Figure:
    # The goal is for the same precision in both; bf16-deepspeed keeps bf16 weights, the
    # bare loop fp32 ones, so that figure has none.
    return rate_figure(f"step_vs_bare_{precision.replace('-', '_')}",
                       f"training step {precision}: benscale vs bare PyTorch",
                       [batch / s for s in times["benscale"]], [batch / s for s in times["bare"]],
                       "bare PyTorch loop", "samples/s",
                       goal=None if precision == "bf16-deepspeed" else 0.95,
                       note=_PRECISION_NOTES[precision])


def _overlap_figure(line: dict[str, list[float]], engine: str) -> Figure:
    """Communication that ran while backward still computed, over all of it, per step."""
    title = "DeepSpeed (benscale)" if engine == "deepspeed" else "DDP"
    return rate_figure(f"{engine}_ws2_comm_overlap",
                       f"world size 2, {title}: gradient communication hidden behind backward",
                       line["hidden_s"], line["comm_s"], "all gradient communication", "s",
                       note="ratio = overlap fraction (0: none hidden, 1: all); from "
                            "timestamps of the last gradient and of every reduction")


def _epoch_figure(rows: list[dict[str, str]]) -> Figure:
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
