"""A performance model of data-parallel ResNet-50 training: epoch time at N nodes x G GPUs.

Why a model: a study measures a handful of points on the machine at hand; a centre deciding
on 128 GPUs needs to know where the scaling breaks and why. The model is deliberately
simple (every term is printed in the report, docs/perfmodel.md derives it):

    t_step = b * c * s(W)                  compute of one rank's micro-batch b
           + b * d                         exposed data-loading wait per sample
           + t_opt + t_other               optimizer step, remaining per-step overhead
           + t_comm - min(o * t_comm, b*c)  all-reduce, minus the part overlapped (o in [0,1])
    t_step = max(t_step, b * G / R_node)   a node cannot consume faster than it loads (R_node)
    t_epoch = steps * t_step

with ``c`` the per-sample compute time and ``d`` the per-sample data wait measured at the
smallest scale, ``s(W)`` the slow-down of ranks sharing a host's cores (emulated nodes
only), and a hierarchical ring all-reduce of ``S`` gradient bytes::

    t_comm = 2 (G-1)/G * S / B_intra + 2 (G-1) * l_intra     (reduce-scatter + all-gather)
           + 2 (N-1)/N * S / B_inter + 2 (N-1) * l_inter     (all-reduce between nodes)

``B_inter`` is per node: each of the G GPUs sends its S/G share at the same time through the
node's adapters, so the node moves S per ring step pair. With N = 1 or G = 1 the formula is
the flat ring, ``2 (p-1)/p * S / B + 2 (p-1) * l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from benscale.errors import ConfigError

#: ResNet-50 (torchvision) with a 12-band first convolution and a 19-class head: 23.6 M
#: parameters (counted with torchvision 0.29); the 1000-class ImageNet model: 25.6 M.
#: Gradient bytes follow the parameters the optimizer updates.
RESNET50_PARAMS: dict[str, int] = {"imagenet-1000": 25_557_032, "bigearthnet-19": 23_575_187}
#: Bytes per gradient element as all-reduced. DeepSpeed's bf16 mode (benscale's
#: ``bf16-deepspeed``) reduces bf16 gradients; autocast mixed precision (benscale's ``bf16``,
#: PyTorch AMP) and fp32/TF32 training reduce fp32 gradients.
GRAD_BYTES: dict[str, int] = {"fp32": 4, "tf32": 4, "amp": 4, "bf16": 4, "bf16-deepspeed": 2,
                              "fp16": 2}


@dataclass(frozen=True)
class Link:
    """One level of the network: effective all-reduce bandwidth and per-step latency."""

    bandwidth_bytes_per_s: float
    latency_s: float

    def ring_time(self, nbytes: float, p: int) -> float:
        """Ring all-reduce of ``nbytes`` over ``p`` peers: 2(p-1)/p * S/B + 2(p-1) * l."""
        if p <= 1:
            return 0.0
        return 2 * (p - 1) / p * nbytes / self.bandwidth_bytes_per_s + 2 * (p - 1) * self.latency_s


@dataclass(frozen=True)
class System:
    """A machine as the model sees it (one entry of data/systems.yaml).

    Attributes:
        name: the system's name, as in reference files and ``--system``.
        description: the hardware, in words.
        gpus_per_node: GPUs (ranks) per node.
        intra: the link between GPUs of one node.
        inter: the network between nodes (bandwidth per node).
        host_cores: when set, ALL ranks share this many cores (nodes emulated on one host).
        data_rate_per_node_sps: the node's input pipeline limit in samples/s (None: none).
        calibrate_links: fit the bandwidth to the measured communication time.
        source: where the numbers come from.
        compute_s_per_sample: a whole training step's time per sample measured on this
            system's accelerator, per precision (``python -m bench gpu`` writes it); where
            given it replaces the study's own compute, optimizer and data terms in
            predictions for this system (empty: the study's measured workload is assumed).
    """

    name: str
    description: str
    gpus_per_node: int
    intra: Link
    inter: Link
    host_cores: int | None = None
    data_rate_per_node_sps: float | None = None
    calibrate_links: bool = False
    source: str = ""
    compute_s_per_sample: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """What one rank does per step, measured at the smallest scale of a study.

    Attributes:
        compute_s_per_sample: forward + backward time per sample on one rank.
        data_s_per_sample: time waiting for input per sample on one rank (exposed).
        optimizer_s_per_step: optimizer step time.
        other_s_per_step: the rest of a step (epoch time minus its measured parts).
        grad_bytes: bytes all-reduced per step.
        overlap: fraction of the all-reduce hidden behind compute (0: none, 1: all).
        measured_world: ranks of the measurement (for the shared-host slow-down).
        threads_per_rank: intra-op threads of each rank (shared-host slow-down).
    """

    compute_s_per_sample: float
    data_s_per_sample: float = 0.0
    optimizer_s_per_step: float = 0.0
    other_s_per_step: float = 0.0
    grad_bytes: float = RESNET50_PARAMS["imagenet-1000"] * 4
    overlap: float = 0.0
    measured_world: int = 1
    threads_per_rank: int = 1


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one point, term by term (seconds)."""

    nodes: int
    gpus_per_node: int
    world_size: int
    batch_per_gpu: float
    steps: int
    compute_s: float
    data_s: float
    optimizer_s: float
    other_s: float
    comm_s: float
    exposed_comm_s: float
    step_s: float
    epoch_time_s: float
    samples_per_s: float
    notes: list[str] = field(default_factory=list)


def allreduce_time(nbytes: float, nodes: int, gpus_per_node: int, system: System) -> float:
    """Hierarchical ring all-reduce time of ``nbytes`` over ``nodes x gpus_per_node`` ranks."""
    return (system.intra.ring_time(nbytes, gpus_per_node)
            + system.inter.ring_time(nbytes, nodes))


def host_slowdown(world: int, work: Workload, system: System) -> float:
    """Compute slow-down of ``world`` ranks sharing one host, relative to the measurement."""
    if not system.host_cores:
        return 1.0
    def load(w: int) -> float:
        return max(1.0, w * work.threads_per_rank / system.host_cores)
    return load(world) / load(work.measured_world)


def predict(system: System, work: Workload, nodes: int, batch_per_gpu: float,
            steps: int, gpus_per_node: int | None = None) -> Prediction:
    """Epoch time of ``steps`` optimizer steps at ``nodes`` x ``gpus_per_node`` ranks."""
    g = gpus_per_node or system.gpus_per_node
    world = nodes * g
    b = batch_per_gpu
    compute = b * work.compute_s_per_sample * host_slowdown(world, work, system)
    data = b * work.data_s_per_sample
    comm = allreduce_time(work.grad_bytes, nodes, g, system) if world > 1 else 0.0
    exposed = comm - min(work.overlap * comm, compute)
    step = compute + data + work.optimizer_s_per_step + work.other_s_per_step + exposed
    notes = []
    if system.data_rate_per_node_sps:
        floor = b * g / system.data_rate_per_node_sps
        if floor > step:
            notes.append(f"input-bound: {system.data_rate_per_node_sps:g} samples/s per node")
            step = floor
    epoch = steps * step
    return Prediction(nodes, g, world, b, steps, compute, data, work.optimizer_s_per_step,
                      work.other_s_per_step, comm, exposed, step, epoch,
                      steps * b * world / epoch if epoch > 0 else math.nan, notes)


def scan(system: System, work: Workload, mode: str, batch: float, samples_per_epoch: int,
         max_gpus: int = 128, gpus_per_node: int | None = None) -> list[Prediction]:
    """Predictions for 1, 2, 4, ... nodes up to ``max_gpus`` GPUs.

    Args:
        system: the machine.
        work: what one rank does per step.
        mode: ``strong`` (``batch`` is the global batch, split over the ranks) or ``weak``
            (``batch`` is the per-GPU batch).
        batch: the batch the mode keeps fixed.
        samples_per_epoch: training samples per epoch (steps = samples // global batch).
        max_gpus: the largest world size predicted.
        gpus_per_node: GPUs per node (default: the system's).
    """
    g = gpus_per_node or system.gpus_per_node
    out = []
    nodes = 1
    while nodes * g <= max_gpus:
        world = nodes * g
        per_gpu = batch / world if mode == "strong" else batch
        if per_gpu < 1:
            break  # strong scaling ends where a rank would get less than one sample
        global_batch = per_gpu * world
        steps = max(int(samples_per_epoch // global_batch), 1)
        out.append(predict(system, work, nodes, per_gpu, steps, g))
        nodes *= 2
    return out


# --------------------------------------------------------------------------- systems
def _system_from(name: str, spec: dict[str, Any]) -> System:
    try:
        return System(
            name=name, description=" ".join(str(spec.get("description", "")).split()),
            gpus_per_node=int(spec["gpus_per_node"]),
            intra=Link(float(spec["intra"]["bandwidth_GBps"]) * 1e9,
                       float(spec["intra"]["latency_us"]) * 1e-6),
            inter=Link(float(spec["inter"]["bandwidth_GBps"]) * 1e9,
                       float(spec["inter"]["latency_us"]) * 1e-6),
            host_cores=spec.get("host_cores"),
            data_rate_per_node_sps=spec.get("data_rate_per_node_sps"),
            calibrate_links=bool(spec.get("calibrate_links", False)),
            source=str(spec.get("source", "")),
            compute_s_per_sample={str(k): float(v) for k, v in
                                  (spec.get("compute_s_per_sample") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"system {name!r}: bad or missing field ({exc}); every system needs "
                          "gpus_per_node, intra/inter {bandwidth_GBps, latency_us}") from exc


def load_systems(path: str | None = None) -> dict[str, System]:
    """The systems of ``path`` (a YAML with a ``systems`` mapping) or the packaged ones."""
    if path is None:
        text = resources.files("benscale.data").joinpath("systems.yaml").read_text()
        where = "benscale/data/systems.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the systems file ({exc})") from exc
        where = path
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc.get("systems"), dict):
        raise ConfigError(f"{where}: expected a top-level mapping 'systems: {{name: {{...}}}}'")
    return {name: _system_from(name, spec) for name, spec in doc["systems"].items()}


def get_system(name: str, path: str | None = None) -> System:
    """One system by name; the error lists the known ones."""
    systems = load_systems(path)
    if name not in systems:
        raise ConfigError(f"unknown system {name!r}; known: {sorted(systems)} (add it to "
                          "a systems YAML, see docs/perfmodel.md)")
    return systems[name]


def calibrate(system: System, work: Workload, nodes: int, gpus_per_node: int,
              comm_s_per_step: float) -> System:
    """The system with ONE effective bandwidth (intra = inter) that reproduces a measured
    all-reduce time, latency kept; unchanged when there is nothing to fit."""
    world = nodes * gpus_per_node
    if world <= 1 or comm_s_per_step <= 0:
        return system
    volume = (2 * (gpus_per_node - 1) / gpus_per_node + 2 * (nodes - 1) / nodes) * work.grad_bytes
    latency = (2 * (gpus_per_node - 1) * system.intra.latency_s
               + 2 * (nodes - 1) * system.inter.latency_s)
    transfer = comm_s_per_step - latency
    if transfer <= 0 or volume <= 0:
        return system
    bw = volume / transfer
    return replace(system, intra=Link(bw, system.intra.latency_s),
                   inter=Link(bw, system.inter.latency_s))


def workload_on(system: System, work: Workload, precision: str) -> tuple[Workload, str | None]:
    """The workload for predictions on ``system``: its measured step time per sample for
    ``precision`` where it has one (a bare step: compute, backward and optimizer; no data
    wait), else the study's own; with a note saying which."""
    measured = system.compute_s_per_sample.get(precision)
    if measured is None:
        return work, None
    return (replace(work, compute_s_per_sample=measured, data_s_per_sample=0.0,
                    optimizer_s_per_step=0.0, other_s_per_step=0.0,
                    measured_world=1, threads_per_rank=1),
            f"{system.name}: compute {measured * 1e3:.3f} ms per sample measured on its GPU "
            f"({precision}; bench gpu), not the study's")


def assumptions(system: System, work: Workload) -> list[str]:
    """The model's inputs in words, printed with every prediction."""
    lines = [
        f"system {system.name}: {system.description}",
        f"{system.gpus_per_node} GPUs (ranks) per node; intra-node all-reduce bandwidth "
        f"{system.intra.bandwidth_bytes_per_s / 1e9:.3g} GB/s, latency "
        f"{system.intra.latency_s * 1e6:.3g} us; inter-node "
        f"{system.inter.bandwidth_bytes_per_s / 1e9:.3g} GB/s per node, latency "
        f"{system.inter.latency_s * 1e6:.3g} us",
        f"gradient all-reduced per step: {work.grad_bytes / 1e6:.1f} MB "
        "(hierarchical ring: reduce-scatter/all-gather in the node, ring between nodes)",
        f"compute {work.compute_s_per_sample * 1e3:.3f} ms per sample per rank, data wait "
        f"{work.data_s_per_sample * 1e3:.3f} ms per sample, optimizer "
        f"{work.optimizer_s_per_step * 1e3:.1f} ms and other {work.other_s_per_step * 1e3:.1f} ms"
        f" per step, measured at {work.measured_world} rank(s)",
        f"overlap of communication with compute: {work.overlap:.0%} (measured)",
    ]
    if system.host_cores:
        lines.append(f"all ranks share {system.host_cores} cores of one host "
                     f"({work.threads_per_rank} thread(s) per rank): compute slows down by "
                     "ranks x threads / cores beyond the measured load")
    if system.data_rate_per_node_sps:
        lines.append(f"input pipeline: at most {system.data_rate_per_node_sps:g} samples/s "
                     "per node")
    if system.source:
        lines.append(f"source of the system figures: {system.source}")
    return lines
