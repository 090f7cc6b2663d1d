"""The performance-model section of the report: per variant, calibrate on that variant's
smallest measured scale with its recorded settings, predict its measured points, then
extrapolate to 128 GPUs (:mod:`.perfmodel`). Variants differ in what the model reads off
their runs (compute per sample, overlap, gradient bytes), so one calibration for all would
credit one variant with another's measurements."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import pandas as pd

from benscale.files.run import RunSettings
from benscale.files.study import StudyConfig
from benscale.report import perfmodel
from benscale.report.perfmodel import GRAD_BYTES, RESNET50_PARAMS, System, Workload

#: GPUs up to which the report extrapolates.
MAX_GPUS = 128


@dataclass(frozen=True)
class VariantModel:
    """The model of one variant: calibrated on that variant's own smallest scale."""

    variant: str
    system: str
    assumptions: list[str]
    notes: list[str]


@dataclass(frozen=True)
class ModelSection:
    """What the report shows of the model: per variant its inputs, and two tables keyed by
    variant."""

    system: str
    variants: list[VariantModel]
    measured: pd.DataFrame      # predicted vs measured per point
    predictions: pd.DataFrame   # scale-out per variant, system and mode

    def text(self) -> str:
        """perfmodel_assumptions.txt: every variant's inputs and calibration notes."""
        return "\n".join(line for v in self.variants
                         for line in [f"[{v.variant}]", *v.assumptions, *v.notes, ""])


def resnet50_grad_bytes(settings: RunSettings) -> float:
    """Gradient bytes of our ResNet-50 for the run's bands, classes and precision."""
    bands = 10 if settings.bands == "s2-10" else 12
    params = (RESNET50_PARAMS["bigearthnet-19"] - (12 - bands) * 64 * 7 * 7
              + (settings.num_classes - 19) * (2048 + 1))
    return float(params * GRAD_BYTES[settings.precision])


def workload_from(row: pd.Series, settings: RunSettings, threads: int) -> Workload:
    """A Workload from one run's runs.csv row (steady-epoch medians, mean over ranks)."""
    steps = float(row["steps_per_epoch"])
    b = float(row["batch_per_gpu"])
    parts = {p: float(row[p]) if not pd.isna(row[p]) else 0.0
             for p in ("data_time_s", "compute_time_s", "comm_time_s", "optimizer_time_s")}
    total = sum(parts.values())
    epoch = float(row["epoch_time_s_median"])
    comm = parts["comm_time_s"]
    overlap = min(max((total - epoch) / comm, 0.0), 1.0) if comm > 0 else 0.0
    return Workload(
        compute_s_per_sample=parts["compute_time_s"] / (steps * b),
        data_s_per_sample=parts["data_time_s"] / (steps * b),
        optimizer_s_per_step=parts["optimizer_time_s"] / steps,
        other_s_per_step=max(epoch - total, 0.0) / steps,
        grad_bytes=resnet50_grad_bytes(settings), overlap=overlap,
        measured_world=int(row["world_size"]), threads_per_rank=threads)


@dataclass(frozen=True)
class ModelInputs:
    """What the model is built from besides runs.csv.

    Attributes:
        config: the study's configuration.
        settings: each variant's recorded settings (bands, classes, precision).
        system: the system the study ran on.
        extra_systems: systems to extrapolate to as well.
        host_cores: cores of the host, for emulated nodes sharing one machine.
    """

    config: StudyConfig
    settings: dict[str, RunSettings]
    system: System
    extra_systems: list[System]
    host_cores: int | None


NEEDED = ("epoch_time_s_median", "steps_per_epoch", "batch_per_gpu", "compute_time_s")


def build(runs: pd.DataFrame, inputs: ModelInputs) -> ModelSection | None:
    """The model section, or None when no run completed: each variant calibrated on its own
    smallest scale with its own settings (precision decides the gradient bytes)."""
    if "status" not in runs or any(c not in runs for c in NEEDED):
        return None
    ok = runs[runs["status"] == "ok"].dropna(subset=list(NEEDED))
    parts = []
    for variant in dict.fromkeys(ok["variant"]):
        settings = inputs.settings.get(variant)
        if settings is not None:
            parts.append(_variant(ok[ok["variant"] == variant], variant, settings, inputs))
    if not parts:
        return None
    return ModelSection(inputs.system.name, [p[0] for p in parts],
                        pd.concat([p[1] for p in parts], ignore_index=True),
                        pd.concat([p[2] for p in parts], ignore_index=True))


def _variant(ok: pd.DataFrame, variant: str, settings: RunSettings,
             inputs: ModelInputs) -> tuple[VariantModel, pd.DataFrame, pd.DataFrame]:
    """One variant's model, its predicted-vs-measured rows and its scale-out rows."""
    notes: list[str] = []
    system = inputs.system
    base = ok.sort_values(["world_size", "mode"]).iloc[0]
    work = workload_from(base, settings, inputs.config.launcher.threads_per_proc)
    if system.host_cores is None and system.calibrate_links and inputs.host_cores:
        system = replace(system, host_cores=inputs.host_cores)
    multi = ok[ok["world_size"] > 1].sort_values("world_size")
    if system.calibrate_links and not multi.empty:
        m = multi.iloc[0]
        per_step = float(m["comm_time_s"]) / float(m["steps_per_epoch"])
        system = perfmodel.calibrate(system, work, int(m["nodes"]), int(m["gpus_per_node"]),
                                     per_step)
        notes.append(f"link bandwidth fitted to the measured all-reduce of {m['point']}: "
                     f"{per_step * 1e3:.1f} ms per step -> "
                     f"{system.intra.bandwidth_bytes_per_s / 1e9:.3g} GB/s")
    notes.append(f"calibrated on {base['point']} ({int(base['world_size'])} rank(s), "
                 f"steady epochs; precision {settings.precision}, engine {settings.engine})")
    measured = _measured(ok, system, work).assign(variant=variant)
    preds = _scale_out(ok, [system, *inputs.extra_systems], work,
                       settings.precision).assign(variant=variant)
    notes += [note for s in inputs.extra_systems
              if (note := perfmodel.workload_on(s, work, settings.precision)[1])]
    model = VariantModel(variant, system.name, perfmodel.assumptions(system, work), notes)
    return model, _first(measured, "variant"), _first(preds, "variant")


def _first(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df[[column, *(c for c in df.columns if c != column)]]


def _measured(ok: pd.DataFrame, system: System, work: Workload) -> pd.DataFrame:
    rows = []
    for _, r in ok.iterrows():
        p = perfmodel.predict(system, work, int(r["nodes"]), float(r["batch_per_gpu"]),
                              int(r["steps_per_epoch"]), int(r["gpus_per_node"]))
        measured = float(r["epoch_time_s_median"])
        rows.append({"point": r["point"], "mode": r["mode"], "world_size": int(r["world_size"]),
                     "measured_epoch_time_s": measured,
                     "predicted_epoch_time_s": p.epoch_time_s,
                     "ratio_predicted_to_measured": p.epoch_time_s / measured
                     if measured > 0 else math.nan,
                     "predicted_compute_s": p.steps * p.compute_s,
                     "predicted_comm_s": p.steps * p.exposed_comm_s,
                     "measured_comm_time_s": float(r["comm_time_s"])})
    return pd.DataFrame(rows)


def _scale_out(ok: pd.DataFrame, systems: list[System], work: Workload,
               precision: str) -> pd.DataFrame:
    rows = []
    for mode, g in ok.groupby("mode"):
        first = g.sort_values("world_size").iloc[0]
        batch = float(first["global_batch"] if mode == "strong" else first["batch_per_gpu"])
        samples = int(float(first["steps_per_epoch"]) * float(first["global_batch"]))
        for system in systems:
            on_system, _ = perfmodel.workload_on(system, work, precision)
            preds = perfmodel.scan(system, on_system, str(mode), batch, samples, MAX_GPUS)
            t0 = preds[0].epoch_time_s if preds else math.nan
            x0 = preds[0].samples_per_s if preds else math.nan
            for p in preds:
                speed = (t0 / p.epoch_time_s if mode == "strong" else p.samples_per_s / x0)
                rows.append({"system": system.name, "mode": mode, **{
                    k: v for k, v in asdict(p).items() if k != "notes"},
                    "speedup": speed, "efficiency": speed * preds[0].world_size / p.world_size,
                    "notes": "; ".join(p.notes)})
    return pd.DataFrame(rows)
