"""GPU acceptance run: ``python -m bench gpu`` (``make bench-gpu``), one GPU, a few minutes.

What decides whether a scaling study on GPU nodes means anything, measured on one GPU:

* the training step of both engines (deepspeed, ddp) through benscale's harness against a
  bare PyTorch loop on the same GPU, in fp32, bf16 (autocast) and bf16 + channels_last, at
  batch 64 and 256 per GPU: samples/s and the ratio (goal >= 0.97 per engine and precision);
* one real epoch of ``benscale train`` on extracted shards, batch 256, the default loader
  threads: data_time_s as a share of the steady epoch (goal <= 2 %: the input path keeps
  the GPU busy);
* the timing itself: benscale's phase times and its DDP hook's CUDA-event communication
  intervals against a ``torch.profiler`` trace of the same steps (compute: the time the
  GPU was busy in kernels; communication: NCCL kernels), within a stated tolerance;
* the measured compute time per sample, written as a performance-model system file
  (``--systems-file`` of ``benscale report``): a 4-GPU node of this GPU with a measured
  compute term instead of an assumed one.

Writes ``results/bench/gpu-<date>-<host>.json`` (GPU model, driver, CUDA, cuDNN, NCCL with
every figure), the system file beside it, and its table into docs/benchmarks.md. Without
CUDA it says so and exits non-zero; ``--device cpu`` runs the same code on the CPU at smoke
sizes for the plumbing test (tests/test_bench_smoke.py), never as a GPU measurement.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bench.common import BenchFigure, Context, UnavailableError, cli_env, rate_figure

NAME = "gpu"
PRECISIONS: tuple[tuple[str, str, bool], ...] = (("fp32", "fp32", False),
                                                 ("bf16", "bf16", False),
                                                 ("bf16_cl", "bf16", True))
BATCHES = (64, 256)
ENGINES = ("deepspeed", "ddp")
#: DeepSpeed's engine cannot take a channels_last model (the config refuses it).
RUNNABLE = {(e, p) for e in ENGINES for p, _, cl in PRECISIONS if e == "ddp" or not cl}
KEYS = (*(f"{e}_{p}_b{b}_vs_bare" for e in ENGINES for p, _, _ in PRECISIONS for b in BATCHES
          if (e, p) in RUNNABLE),
        "epoch_data_share", "profiler_compute_agreement", "profiler_comm_agreement")
#: How close benscale's timing must come to the profiler's: within 10 % of the profiler's
#: figure plus 0.5 ms per step (the synchronisations and the hook's events themselves).
TOLERANCE_REL, TOLERANCE_ABS_S = 0.10, 0.5e-3

T = TypeVar("T")


def attempt(errors: dict[str, str], key: str, fn: Callable[[], T]) -> T | None:
    """``fn()``, or None with its error kept under ``key``.

    A GPU machine may be had for minutes only, and these CUDA paths run there first: one
    path failing must not cost the figures of the others (the run then reports "partial").
    """
    try:
        return fn()
    except Exception as exc:  # any failure of one measurement, reported with the others
        traceback.print_exc()
        errors[key] = f"{type(exc).__name__}: {exc}"
        return None


# ---------------------------------------------------------------------------- workloads


class Harness:
    """benscale's step (engine, timers, communication meter) on one in-memory batch."""

    def __init__(self, engine: str, precision: str, channels_last: bool, batch: int,
                 device: Any, comm_timing: bool = True) -> None:
        """Build the step context as ``benscale train`` does."""
        import torch.distributed as dist

        from benscale.train import config as config_mod
        from benscale.train.steps import PhaseTimes, build_step_context

        cfg = config_mod.load(None, [
            f"engine={engine}", f"precision={precision}", f"channels_last={channels_last}",
            f"batch_per_gpu={batch}", "global_batch=null", "warmup_epochs=0", "epochs=1000",
            f"comm_timing={str(comm_timing).lower()}"])
        self.ctx, self.built = build_step_context(cfg, cfg.batches(dist.get_world_size()),
                                                  1000, device)
        self.inputs = _batch(batch, device)
        self.times = PhaseTimes()

    def steps(self, n: int) -> None:
        """``n`` micro-steps through ``train_micro_batches``."""
        from benscale.train.steps import train_micro_batches

        x, y = self.inputs
        train_micro_batches(self.ctx, ((x, y, None, None) for _ in range(n)), self.times)


class BareLoop:
    """A plain PyTorch step on the same device: zero_grad, forward, backward, step."""

    def __init__(self, precision: str, channels_last: bool, batch: int, device: Any) -> None:
        """Model, optimizer and one batch on ``device``."""
        import torch

        from benscale.train.model import build_model, loss_fn

        torch.manual_seed(0)
        self.model = build_model(12, 19).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)
        self.loss = loss_fn()
        self.x, self.y = _batch(batch, device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.device, self.bf16 = device, precision == "bf16"

    def steps(self, n: int) -> None:
        """``n`` optimizer steps, the device synchronised at the end."""
        import torch

        self.model.train()
        for _ in range(n):
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(self.x)
            self.loss(out.float(), self.y).backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _batch(batch: int, device: Any) -> Any:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 12, 120, 120, generator=gen).to(device)
    y = (torch.rand(batch, 19, generator=gen) < 0.3).float().to(device)
    return x, y


def _timed(fn: Any, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return time.perf_counter() - start


def steps_worker(rank: int, spec: dict[str, Any]) -> None:
    """One process on one device: every engine x precision x batch against the bare loop,
    alternating blocks of steps; then the profiler check. A failing one is recorded under
    ``errors`` and the others still run."""
    import torch

    from bench.train_step import _init

    device = _init(rank, 1, spec["port"], spec["threads"])
    if spec["device"] == "cpu":
        device = torch.device("cpu")
    out: dict[str, Any] = {"steps": {}, "profile": None, "errors": {}}
    for key, precision, channels_last in PRECISIONS:
        for batch in spec["batches"]:
            bare = attempt(out["errors"], f"bare_{key}_b{batch}",
                           lambda p=precision, c=channels_last, b=batch:
                           BareLoop(p, c, b, device))
            if bare is None:
                continue
            for engine in (e for e in ENGINES if (e, key) in RUNNABLE):
                name = f"{engine}_{key}_b{batch}"
                rates = attempt(out["errors"], name,
                                lambda e=engine, p=precision, c=channels_last, b=batch,
                                bare=bare: _compare(Harness(e, p, c, b, device), bare, b,
                                                    spec))
                if rates is not None:
                    out["steps"][name] = rates
                _release(device)
                # Kept after each: a crash of this process leaves what was measured.
                Path(spec["out"]).write_text(json.dumps(out))
            del bare
            _release(device)
    out["profile"] = attempt(out["errors"], "profile", lambda: profile_check(device, spec))
    Path(spec["out"]).write_text(json.dumps(out))


def _compare(ours: Harness, bare: BareLoop, batch: int, spec: dict[str, Any]
             ) -> dict[str, list[float]]:
    """samples/s of ``ours`` and ``bare`` in alternating blocks of steps, warmed up first."""
    rates: dict[str, list[float]] = {"benscale": [], "bare": []}
    ours.steps(spec["warmup"])
    bare.steps(spec["warmup"])
    for r in range(spec["repeats"]):
        order = (("benscale", ours.steps), ("bare", bare.steps))
        for name, fn in order if r % 2 == 0 else order[::-1]:
            rates[name].append(batch * spec["steps"] / _timed(fn, spec["steps"]))
    return rates


def _release(device: Any) -> None:
    """Give the freed models' GPU memory back before the next one is built."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def profile_check(device: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The harness's compute and communication timing of a few DDP steps against a
    torch.profiler trace of the same steps."""
    from torch.profiler import ProfilerActivity, profile

    ours = Harness("ddp", "fp32", False, spec["batches"][-1], device)
    ours.steps(spec["warmup"])
    from benscale.train.steps import PhaseTimes

    ours.times = PhaseTimes()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        ours.steps(spec["steps"])
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    comm_events = [e for e in kernels if "nccl" in e.name.lower()] if kernels else [
        e for e in prof.events() if e.name.startswith(("gloo:", "nccl:"))]
    busy_s = sum(e.device_time_total for e in kernels) / 1e6 if kernels else None
    comm_s = sum(e.time_range.elapsed_us() for e in comm_events) / 1e6
    n = spec["steps"]
    return {"steps": n, "method": "CUDA kernels" if kernels else "CPU events (no CUDA)",
            "benscale_compute_s_per_step": ours.times.compute_time_s / n,
            "benscale_comm_s_per_step": ours.times.comm_time_s / n,
            "profiler_kernel_busy_s_per_step": busy_s / n if busy_s is not None else None,
            "profiler_comm_s_per_step": comm_s / n,
            "timing_method": ours.built.comm.method}


# ---------------------------------------------------------------------------- a real epoch


def epoch_run(ctx: Context, device: str) -> list[dict[str, str]]:
    """Two epochs of ``benscale train`` at batch 256 (smoke: 4) on the benchmark shards with
    the default loader threads; returns epochs.csv. 8,192 patches: 6,554 for training, 25
    steps an epoch, so the second epoch's data share is of a steady epoch, not of start-up."""
    from bench.loader import shards

    data = shards(ctx, ctx.size(12, 8192), workers=os.cpu_count() or 1)
    run_dir = ctx.work / f"gpu-epoch-{device}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    sets = ["epochs=2", f"batch_per_gpu={ctx.size(4, 256)}", "global_batch=null",
            "checkpoint.enabled=false", "progress=false", "warmup_epochs=0",
            "precision=bf16", f"limit_eval_batches={ctx.size(1, 2)}"]
    cmd = [sys.executable, "-m", "benscale.cli", "train", "--data", str(data), "--out",
           str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    env = cli_env()
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benscale train exited {proc.returncode}: {proc.stderr[-2000:]}")
    with (run_dir / "epochs.csv").open() as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- results


def gpu_description() -> dict[str, Any]:
    """GPU model, driver, CUDA, cuDNN, NCCL (benscale's provenance)."""
    import torch

    from benscale.provenance import accelerator_stack, gpu_models
    from benscale.typed import to_mapping

    return {"gpus": list(gpu_models()), **to_mapping(accelerator_stack()),
            "torch": torch.__version__}


def system_file(path: Path, compute: dict[str, float], gpu: str, measured: str) -> None:
    """A performance-model system: a node of 4 of this GPU, with the measured compute time
    per sample per precision; links are the DGX-class assumptions of systems.yaml."""
    name = "measured-" + "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")
    doc = {"systems": {name: {
        "description": f"4x {gpu} per node; compute per sample measured by "
                       f"`python -m bench gpu` ({measured})",
        "gpus_per_node": 4,
        "intra": {"bandwidth_GBps": 230, "latency_us": 8},
        "inter": {"bandwidth_GBps": 80, "latency_us": 10},
        "compute_s_per_sample": compute,
        "source": f"compute measured ({measured}); links: assumption (NVLink-class node, "
                  "4 x 200 Gb/s network), as juwels-booster in benscale's systems.yaml"}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Measure the GPU figures (module docstring)."""
    import torch
    import torch.multiprocessing as mp

    from benscale.train.world import free_port

    device = ctx.device
    if device == "cuda" and not torch.cuda.is_available():
        raise UnavailableError("no CUDA device here: `python -m bench gpu` measures a GPU "
                               "(run it on a GPU node; --device cpu only smoke-tests it)")
    # --quick: every figure still, on batches of 2 and 4
    spec = {"device": device, "batches": [ctx.size(2 * (i + 1), b)
                                          for i, b in enumerate(BATCHES)],
            "repeats": ctx.size(1, 5), "steps": ctx.size(1, 10), "warmup": ctx.size(1, 5),
            "threads": os.cpu_count() or 1, "port": free_port(),
            "out": str(ctx.work / f"gpu-steps-{device}.json")}
    errors: dict[str, str] = {}
    Path(spec["out"]).unlink(missing_ok=True)  # never an earlier run's figures
    attempt(errors, "steps process", lambda: mp.spawn(steps_worker, args=(spec,), nprocs=1,
                                                      join=True))
    out = Path(spec["out"])
    measured = (json.loads(out.read_text()) if out.exists()
                else {"steps": {}, "profile": None, "errors": {}})
    errors = {**measured["errors"], **errors}
    figures = []
    for engine in ENGINES:
        for key, precision, channels_last in PRECISIONS:
            if (engine, key) not in RUNNABLE:
                continue
            for b, batch in zip(BATCHES, spec["batches"], strict=False):
                rates = measured["steps"].get(f"{engine}_{key}_b{batch}")
                if rates is None:
                    continue
                figures.append(rate_figure(
                    f"{engine}_{key}_b{b}_vs_bare",
                    f"{engine}, {precision}{' + channels_last' if channels_last else ''}, "
                    f"batch {batch}/GPU: benscale vs bare PyTorch", rates["benscale"],
                    rates["bare"], "bare PyTorch loop, same GPU", "samples/s", goal=0.97))
    rows = attempt(errors, "epoch", lambda: epoch_run(ctx, device)) or []
    if rows:
        steady = rows[1:] or rows
        figures.append(rate_figure(
            "epoch_data_share", "real epoch, batch 256/GPU, default loader threads: data "
            "time as a share of the epoch", [float(r["data_time_s"]) for r in steady],
            [float(r["epoch_time_s"]) for r in steady], "epoch time", "s",
            note="goal: ratio <= 0.02 (lower is better; the table's 'met' column reads >= "
                 "and does not apply)"))
    prof = measured["profile"]
    agree = None
    if prof is not None:
        busy = prof["profiler_kernel_busy_s_per_step"] or prof["benscale_compute_s_per_step"]
        figures.append(rate_figure("profiler_compute_agreement", "benscale's compute time vs "
                                   "the profiler's GPU busy time, same steps",
                                   [prof["benscale_compute_s_per_step"]], [busy],
                                   "torch.profiler", "s/step"))
        figures.append(rate_figure("profiler_comm_agreement", "benscale's communication (DDP "
                                   "hook) vs the profiler's collective kernels, same steps",
                                   [prof["benscale_comm_s_per_step"] + 1e-9],
                                   [prof["profiler_comm_s_per_step"] + 1e-9], "torch.profiler",
                                   "s/step", note=f"tolerance: |a - b| <= {TOLERANCE_REL:.0%} "
                                   f"of b + {TOLERANCE_ABS_S * 1e3:g} ms per step"))
        agree = {"compute": _agrees(prof["benscale_compute_s_per_step"], busy),
                 "comm": _agrees(prof["benscale_comm_s_per_step"],
                                 prof["profiler_comm_s_per_step"])}
    compute_per_sample = {}
    for key, precision, channels_last in PRECISIONS:
        bare = measured["steps"].get(f"ddp_{key}_b{spec['batches'][-1]}")
        if not channels_last and bare is not None:
            compute_per_sample[precision] = 1.0 / statistics.median(bare["bare"])
    description = ((attempt(errors, "gpu description", gpu_description) or {"gpus": []})
                   if device == "cuda" else {"gpus": ["cpu smoke run"]})
    gpu_name = (description["gpus"] or ["unknown GPU"])[0]
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    systems = ctx.out_dir / f"gpu-{time.strftime('%Y-%m-%d')}-{host}-systems.yaml"
    if compute_per_sample:
        system_file(systems, compute_per_sample, gpu_name,
                    "smoke run on the CPU: not a GPU measurement" if device == "cpu"
                    else time.strftime("%Y-%m-%d"))
    details = {"device": device if device == "cuda" else "cpu (smoke test: NOT a GPU "
               "measurement)", "gpu": description, "profile": prof, "agreement": agree,
               "systems_file": str(systems) if compute_per_sample else None,
               "compute_s_per_sample": compute_per_sample, "epochs_csv": rows,
               "errors": errors, "notes": [
                   "deepspeed + channels_last is not measured: DeepSpeed's engine views "
                   "each parameter as bytes to broadcast it, which a channels_last weight "
                   "cannot be (benscale's config refuses the combination)",
                   "harness = benscale's train_micro_batches with its timers and "
                   "communication meter; bare = zero_grad/forward/backward/step on the "
                   "same GPU, same model, batch and autocast",
                   f"timing vs profiler: {agree}"]}
    return figures, details


def _agrees(ours: float, reference: float) -> bool:
    return abs(ours - reference) <= TOLERANCE_REL * reference + TOLERANCE_ABS_S
