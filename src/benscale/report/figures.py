"""The report's figures (seaborn on matplotlib figures made without pyplot), each as PNG
and SVG.

Every figure names the study and the machine in its title, labels its axes with units and
has a legend; error bars span min..max over repeats, the marker is the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benscale.atomic import atomic_path
from benscale.files.run import PARTS

#: Figure size in inches and PNG resolution: readable in a browser at 100 % zoom.
SIZE = (7.0, 4.6)
DPI = 110


@dataclass(frozen=True)
class ReportFigure:
    """One written figure: its key, caption and files (relative to the report folder)."""

    key: str
    caption: str
    png: str
    svg: str


def _figure() -> tuple[Figure, Axes]:
    """A new figure and its axes, outside pyplot: no global state, no display backend."""
    fig = Figure(figsize=SIZE)
    return fig, fig.subplots()


def _title(ax: Axes, what: str, study: str, machine: str) -> None:
    ax.set_title(f"{what}\nstudy {study} on {machine}", fontsize=11)


def _save(fig: Figure, out: Path, key: str, caption: str) -> ReportFigure:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for ext in ("png", "svg"):
        with atomic_path(out / f"{key}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI)
    return ReportFigure(key, caption, f"figures/{key}.png", f"figures/{key}.svg")


def _scaling_plot(ax: Axes, scaling: pd.DataFrame, metric: str) -> None:
    """Median per mode and world size with min..max error bars."""
    palette = dict(zip(sorted(scaling["mode"].unique()),
                       sns.color_palette("deep"), strict=False))
    for mode, g in scaling.groupby("mode"):
        g = g.sort_values("world_size")
        y = g[f"{metric}_median"]
        err = [y - g[f"{metric}_min"], g[f"{metric}_max"] - y]
        ax.errorbar(g["world_size"], y, yerr=err, marker="o", capsize=4,
                    color=palette[mode], label=f"{mode} scaling (median, min..max)")


def _ideal(ax: Axes, scaling: pd.DataFrame, metric: str) -> None:
    for mode, g in scaling.groupby("mode"):
        g = g.sort_values("world_size")
        w0 = g["baseline_world_size"].iloc[0]
        base = g[g["world_size"] == w0][f"{metric}_median"].iloc[0]
        w = g["world_size"]
        if metric == "epoch_time_s":
            ideal = base * w0 / w if mode == "strong" else base + 0 * w
        elif metric == "samples_per_s":
            ideal = base * w / w0
        elif metric == "speedup":
            ideal = w / w0
        else:
            ideal = 1.0 + 0 * w
        ax.plot(w, ideal, ls="--", color="grey", lw=1,
                label=f"ideal ({mode})" if len(scaling["mode"].unique()) > 1 else "ideal")


def _gpu_axis(ax: Axes, scaling: pd.DataFrame, log: bool = True) -> None:
    ticks = sorted(scaling["world_size"].unique())
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("GPUs (ranks, world size)")


def scaling_figures(scaling: pd.DataFrame, out: Path, study: str,
                    machine: str) -> list[ReportFigure]:
    """Epoch time, speedup, efficiency and throughput against the number of GPUs."""
    if scaling.empty:
        return []
    specs = [
        ("epoch_time", "epoch_time_s", "Time per epoch vs GPUs (log-log)",
         "time per epoch [s]", True),
        ("speedup", "speedup", "Speedup over the smallest scale vs ideal", "speedup [x]", False),
        ("efficiency", "efficiency", "Parallel efficiency vs GPUs",
         "parallel efficiency [fraction of ideal]", False),
        ("throughput", "samples_per_s", "Training throughput vs GPUs",
         "throughput [samples/s]", False),
    ]
    figures = []
    for key, metric, what, ylabel, loglog in specs:
        fig, ax = _figure()
        _scaling_plot(ax, scaling, metric)
        _ideal(ax, scaling, metric)
        _gpu_axis(ax, scaling)
        if loglog:
            ax.set_yscale("log")
        if metric == "efficiency":
            ax.set_ylim(0, max(1.1, float(scaling["efficiency_max"].max()) * 1.05))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        _title(ax, what, study, machine)
        figures.append(_save(fig, out, key, what))
    return figures


def accuracy_figure(epochs: pd.DataFrame, out: Path, study: str,
                    machine: str) -> list[ReportFigure]:
    """Validation macro mAP per epoch, one line per world size (median over repeats)."""
    if epochs.empty or "val_map_macro" not in epochs or epochs["val_map_macro"].isna().all():
        return []
    data = epochs.assign(GPUs=epochs["world_size"].astype(int).astype(str))
    fig, ax = _figure()
    sns.lineplot(data=data, x="epoch", y="val_map_macro", hue="GPUs", style="mode",
                 estimator="median", errorbar=("pi", 100), marker="o", ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation macro mAP [0..1]")
    ax.set_xticks(sorted(data["epoch"].unique()))
    _title(ax, "Accuracy (validation macro mAP) vs epoch per scale", study, machine)
    return [_save(fig, out, "accuracy", "Validation macro mAP vs epoch per scale")]


def time_to_accuracy_figure(runs: pd.DataFrame, out: Path, study: str, machine: str,
                            target: float | None) -> list[ReportFigure]:
    """Training time until the target macro mAP, per world size (median, min..max)."""
    if target is None or "time_to_target_s" not in runs or runs["time_to_target_s"].isna().all():
        return []
    ok = runs[runs["status"] == "ok"].dropna(subset=["time_to_target_s"])
    agg = ok.groupby(["mode", "world_size"])["time_to_target_s"].agg(["median", "min", "max"])
    agg = agg.reset_index().rename(columns={"median": "t_median", "min": "t_min", "max": "t_max"})
    fig, ax = _figure()
    for (mode, g), color in zip(agg.groupby("mode"), sns.color_palette("deep"), strict=False):
        err = [g["t_median"] - g["t_min"], g["t_max"] - g["t_median"]]
        ax.errorbar(g["world_size"], g["t_median"], yerr=err, marker="s", capsize=4,
                    color=color, label=f"{mode} scaling (median, min..max)")
    _gpu_axis(ax, agg, log=True)
    ax.set_ylabel(f"training time to val macro mAP >= {target:g} [s]")
    ax.legend(fontsize=8)
    _title(ax, "Time to accuracy vs GPUs", study, machine)
    return [_save(fig, out, "time_to_accuracy", f"Time to reach macro mAP {target:g}")]


def breakdown_figure(runs: pd.DataFrame, out: Path, study: str, machine: str) -> list[ReportFigure]:
    """Stacked bar: data / compute / communication / optimizer time per epoch, per scale."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    if ok.empty or not all(p in ok for p in PARTS):
        return []
    agg = ok.groupby(["mode", "world_size"])[list(PARTS)].median().reset_index()
    labels = [f"{m}\n{w} GPUs" for m, w in zip(agg["mode"], agg["world_size"], strict=True)]
    fig, ax = _figure()
    bottom = pd.Series(0.0, index=agg.index)
    for part, color in zip(PARTS, sns.color_palette("deep"), strict=False):
        values = agg[part].fillna(0.0)
        ax.bar(labels, values, bottom=bottom, color=color,
               label=part.removesuffix("_time_s").replace("comm", "communication"))
        bottom += values
    ax.set_ylabel("time per epoch [s] (mean over ranks)")
    ax.set_xlabel("scaling point")
    ax.legend(fontsize=8)
    _title(ax, "Where an epoch goes: data / compute / communication / optimizer", study,
           machine)
    return [_save(fig, out, "breakdown", "Epoch time split into its parts")]


def all_figures(epochs: pd.DataFrame, runs: pd.DataFrame, scaling: pd.DataFrame, out: Path,
                study: str, machine: str, target: float | None) -> list[ReportFigure]:
    """Every figure of the report (those without data are left out)."""
    sns.set_theme(context="notebook", style="whitegrid")
    return [*scaling_figures(scaling, out, study, machine),
            *accuracy_figure(epochs, out, study, machine),
            *time_to_accuracy_figure(runs, out, study, machine, target),
            *breakdown_figure(runs, out, study, machine)]
