"""The report's figures (seaborn on matplotlib figures made without pyplot), each as PNG
and SVG.

Every figure names the study and the machine in its title, labels its axes with units and
has a legend. Colour is the comparison axis: one colour per variant (or per study / variant
on the comparison page), the same in every figure; marker and line style tell the scaling
mode apart. Error bars span min..max over repeats, the marker is the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from benscale.atomic import atomic_path
from benscale.files.run import PARTS
from benscale.report.labels import label

#: Figure size in inches and PNG resolution: readable in a browser at 100 % zoom.
SIZE = (7.0, 4.6)
DPI = 110
#: Marker and line style per scaling mode.
MODE_STYLE: dict[str, tuple[str, str]] = {"strong": ("o", "-"), "weak": ("s", "--")}
#: Line style per model system: the study's own first, then the extrapolations.
SYSTEM_STYLES: tuple[str, ...] = ("-", "--", "-.", ":")
#: Sideways offset between series, in octaves of the GPU axis.
DODGE = 0.03
#: Colours of an epoch's parts (the breakdown), apart from the variants' palette.
PART_COLOURS: dict[str, str] = {"data_time_s": "#b0b0b0", "compute_time_s": "#6f8fb3",
                                "comm_time_s": "#d9894a", "optimizer_time_s": "#8a6bb0"}


@dataclass(frozen=True)
class ReportFigure:
    """One written figure: its key, caption and files (relative to the report folder)."""

    key: str
    caption: str
    png: str
    svg: str


@dataclass(frozen=True)
class FigureContext:
    """Where figures go and how they name and colour what they show.

    Attributes:
        out: the figures folder.
        study: the study (or studies) named in every title.
        machine: the machine (or machines) named in every title.
        palette: series -> colour, fixed for the whole page.
        hue: the column naming a series (``variant``; ``series`` when comparing studies).
    """

    out: Path
    study: str
    machine: str
    palette: dict[str, str]
    hue: str = "variant"


#: seaborn's colour-blind palette reordered so that neighbours differ most (its orange and
#: vermilion apart).
COLOUR_ORDER = (0, 1, 2, 4, 5, 3, 9, 6, 8, 7)


def palette(names: list[str]) -> dict[str, str]:
    """One colour per name, in order (colour-blind safe up to 10 names)."""
    if len(names) <= len(COLOUR_ORDER):
        base = sns.color_palette("colorblind", len(COLOUR_ORDER))
        colours = [base[i] for i in COLOUR_ORDER[:len(names)]]
    else:
        colours = sns.color_palette("husl", len(names))
    return {n: "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in rgb))
            for n, rgb in zip(names, colours, strict=True)}


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A new figure and its axes, outside pyplot: no global state, no display backend."""
    fig = Figure(figsize=SIZE)
    axes = fig.subplots(1, ncols, sharey=True, squeeze=False)
    return fig, list(axes[0])


def _title(fig: Figure | Axes, what: str, ctx: FigureContext) -> None:
    text = f"{what}\nstudy {ctx.study} on {ctx.machine}"
    if isinstance(fig, Figure):
        fig.suptitle(text, fontsize=11)
    else:
        fig.set_title(text, fontsize=11)


def _save(fig: Figure, ctx: FigureContext, key: str, caption: str) -> ReportFigure:
    ctx.out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for ext in ("png", "svg"):
        with atomic_path(ctx.out / f"{key}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI)
    return ReportFigure(key, caption, f"figures/{key}.png", f"figures/{key}.svg")


def _ordered(df: pd.DataFrame, ctx: FigureContext) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(series, mode) groups in palette order, then strong before weak."""
    groups = dict(iter(df.groupby([ctx.hue, "mode"], sort=False)))
    rank = {n: i for i, n in enumerate(ctx.palette)}
    return sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][1]))


def _name(series: str, mode: str, df: pd.DataFrame) -> str:
    """A series' legend text; the mode only when the figure has both."""
    return f"{series}, {mode}" if df["mode"].nunique() > 1 else str(series)


def _dodged(worlds: pd.Series, i: int, n: int) -> pd.Series:
    """World sizes nudged sideways (a few % on the log axis) per series, so that series
    with equal values stay visible side by side."""
    return worlds.astype(float) * 2 ** (DODGE * (i - (n - 1) / 2))


def _scaling_plot(ax: Axes, scaling: pd.DataFrame, metric: str, ctx: FigureContext) -> None:
    """Median per series, mode and world size with min..max error bars."""
    groups = _ordered(scaling, ctx)
    for i, ((series, mode), g) in enumerate(groups):
        g = g.sort_values("world_size")
        y = g[f"{metric}_median"]
        err = [y - g[f"{metric}_min"], g[f"{metric}_max"] - y]
        marker, ls = MODE_STYLE.get(mode, ("D", "-."))
        ax.errorbar(_dodged(g["world_size"], i, len(groups)), y, yerr=err, marker=marker,
                    ls=ls, capsize=4, color=ctx.palette.get(series, "black"),
                    label=_name(series, mode, scaling))


def _ideal(ax: Axes, scaling: pd.DataFrame, metric: str, ctx: FigureContext) -> None:
    """Ideal scaling: from each series' own smallest scale for times and throughputs (in its
    colour, dotted), one grey line per mode for speedup and efficiency."""
    if metric in ("speedup", "efficiency"):
        for mode, g in scaling.groupby("mode"):
            w0 = float(g["baseline_world_size"].min())
            w = pd.Series(sorted(g["world_size"].unique()), dtype=float)
            ideal = w / w0 if metric == "speedup" else 1.0 + 0 * w
            many = scaling["mode"].nunique() > 1
            ax.plot(w, ideal, ls=":", color="grey", lw=1.2,
                    label=f"ideal ({mode})" if many else "ideal")
        return
    first = True
    for (series, mode), g in _ordered(scaling, ctx):
        g = g.sort_values("world_size")
        w0 = g["baseline_world_size"].iloc[0]
        base = g[g["world_size"] == w0][f"{metric}_median"]
        if base.empty:
            continue
        b = float(base.iloc[0])
        w = g["world_size"].astype(float)
        if metric == "epoch_time_s":
            ideal = b * w0 / w if mode == "strong" else b + 0 * w
        else:
            ideal = b * w / w0
        ax.plot(w, ideal, ls=":", lw=1, color=ctx.palette.get(series, "grey"), alpha=0.8,
                label="ideal (dotted, from each line's smallest scale)" if first else None)
        first = False


def _gpu_axis(ax: Axes, worlds: pd.Series, log: bool = True) -> None:
    ticks = sorted(int(w) for w in worlds.unique())
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("GPUs (ranks, world size)")


#: (key, metric, title, y label, log y) of the scaling figures.
SCALING_SPECS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("epoch_time", "epoch_time_s", "Time per epoch vs GPUs (log-log)", "time per epoch [s]",
     True),
    ("speedup", "speedup", "Speedup over each line's smallest scale vs ideal",
     "speedup [x]", False),
    ("efficiency", "efficiency", "Parallel efficiency vs GPUs",
     "parallel efficiency [fraction of ideal]", False),
    ("throughput", "samples_per_s", "Training throughput vs GPUs", "throughput [samples/s]",
     False),
)


def scaling_figures(scaling: pd.DataFrame, ctx: FigureContext) -> list[ReportFigure]:
    """Epoch time, speedup, efficiency and throughput against the number of GPUs, one line
    per series and mode on shared axes."""
    if scaling.empty:
        return []
    figures = []
    for key, metric, what, ylabel, loglog in SCALING_SPECS:
        fig, (ax,) = _figure()
        _scaling_plot(ax, scaling, metric, ctx)
        _ideal(ax, scaling, metric, ctx)
        _gpu_axis(ax, scaling["world_size"])
        if loglog:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            low, high = ax.get_ylim()
            # within a decade the minor ticks are the only labels; beyond, they crowd
            ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
            ax.tick_params(axis="y", which="minor", labelsize=8)
        if metric == "efficiency":
            ax.set_ylim(0, max(1.1, float(scaling["efficiency_max"].max()) * 1.05))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        _title(ax, what, ctx)
        figures.append(_save(fig, ctx, key, what))
    return figures


def accuracy_figure(epochs: pd.DataFrame, ctx: FigureContext) -> list[ReportFigure]:
    """Validation macro mAP per epoch: colour = variant, line style = scale (median over
    repeats, band = min..max)."""
    if epochs.empty or "val_map_macro" not in epochs or epochs["val_map_macro"].isna().all():
        return []
    data = epochs.dropna(subset=["val_map_macro"])
    data = data[data["status"] == "ok"] if "status" in data else data
    if data.empty:
        return []
    scale = data["world_size"].astype(int).astype(str) + " GPUs"
    if data["mode"].nunique() > 1:
        scale = data["mode"] + ", " + scale
    data = data.assign(scale=scale)
    fig, (ax,) = _figure()
    sns.lineplot(data=data, x="epoch", y="val_map_macro", hue=ctx.hue,
                 hue_order=[v for v in ctx.palette if v in set(data[ctx.hue])],
                 palette=ctx.palette, style="scale", estimator="median",
                 errorbar=("pi", 100), marker="o", ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label("val_map_macro"))
    ax.set_xticks(sorted(data["epoch"].unique()))
    ax.legend(fontsize=8)
    _title(ax, "Accuracy (validation macro mAP) vs epoch", ctx)
    return [_save(fig, ctx, "accuracy", "Validation macro mAP vs epoch per variant and scale")]


def time_to_accuracy_figure(runs: pd.DataFrame, ctx: FigureContext,
                            target: float | None) -> list[ReportFigure]:
    """Training time until the target macro mAP, per series and world size (median,
    min..max)."""
    if target is None or "time_to_target_s" not in runs or runs["time_to_target_s"].isna().all():
        return []
    ok = runs[runs["status"] == "ok"].dropna(subset=["time_to_target_s"])
    agg = (ok.groupby([ctx.hue, "mode", "world_size"], sort=False)["time_to_target_s"]
           .agg(["median", "min", "max"]).reset_index())
    fig, (ax,) = _figure()
    groups = _ordered(agg, ctx)
    for i, ((series, mode), g) in enumerate(groups):
        g = g.sort_values("world_size")
        marker, ls = MODE_STYLE.get(mode, ("D", "-."))
        ax.errorbar(_dodged(g["world_size"], i, len(groups)), g["median"],
                    yerr=[g["median"] - g["min"], g["max"] - g["median"]], marker=marker,
                    ls=ls, capsize=4, color=ctx.palette.get(series, "black"),
                    label=_name(series, mode, agg))
    _gpu_axis(ax, agg["world_size"], log=True)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"training time to val macro mAP >= {target:g} [s]")
    ax.legend(fontsize=8)
    _title(ax, "Time to accuracy vs GPUs", ctx)
    return [_save(fig, ctx, "time_to_accuracy", f"Time to reach macro mAP {target:g}")]


def breakdown_figure(runs: pd.DataFrame, ctx: FigureContext) -> list[ReportFigure]:
    """Stacked bars of data / compute / communication / optimizer time per epoch, one panel
    per variant (titled in its colour) on a shared time axis, with the epoch time as a black
    bar: parts stacking above it are communication hidden behind compute."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    if ok.empty or not all(p in ok for p in (*PARTS, "epoch_time_s_median")):
        return []
    agg = ok.groupby([ctx.hue, "mode", "world_size"], sort=False)[
        [*PARTS, "epoch_time_s_median"]].median().reset_index()
    names = [v for v in ctx.palette if v in set(agg[ctx.hue])]
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names, strict=True):
        g = agg[agg[ctx.hue] == name].sort_values(["mode", "world_size"])
        labels = [f"{w} GPUs" if agg["mode"].nunique() == 1 else f"{m}\n{w} GPUs"
                  for m, w in zip(g["mode"], g["world_size"], strict=True)]
        bottom = pd.Series(0.0, index=g.index)
        for part in PARTS:
            values = g[part].fillna(0.0)
            ax.bar(labels, values, bottom=bottom, color=PART_COLOURS[part],
                   label=label(part).removesuffix(" [s]"))
            bottom += values
        ax.plot(labels, g["epoch_time_s_median"], ls="none", marker="_", ms=40, mew=2,
                color="black", label="epoch time (max over ranks)")
        ax.set_title(str(name), color=ctx.palette[name], fontsize=10, fontweight="bold")
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("time per epoch [s] (mean over ranks)")
    axes[-1].legend(fontsize=8)
    _title(fig, "Where an epoch goes: data / compute / communication / optimizer", ctx)
    return [_save(fig, ctx, "breakdown", "Epoch time split into its parts, per variant")]


def model_figure(predictions: pd.DataFrame, scaling: pd.DataFrame,
                 ctx: FigureContext) -> list[ReportFigure]:
    """The performance model's efficiency up to its largest scale: colour = variant, line
    style = system, markers = the measured efficiency."""
    if predictions is None or predictions.empty:
        return []
    fig, (ax,) = _figure()
    systems = list(dict.fromkeys(predictions["system"]))
    styles = dict(zip(systems, SYSTEM_STYLES, strict=False))
    for (series, mode), g in _ordered(predictions, ctx):
        marker, _ = MODE_STYLE.get(mode, ("D", "-."))
        colour = ctx.palette.get(series, "black")
        for system in systems:
            s = g[g["system"] == system].sort_values("world_size")
            ax.plot(s["world_size"], s["efficiency"], ls=styles.get(system, "-"), lw=1.4,
                    marker=marker, ms=3, color=colour)
        m = scaling[(scaling[ctx.hue] == series) & (scaling["mode"] == mode)]
        ax.plot(m["world_size"], m["efficiency_median"], marker=marker, ls="none", ms=9,
                mec="black", color=colour)
    names = [n for n in ctx.palette if n in set(predictions[ctx.hue])]
    handles = [Line2D([], [], color=ctx.palette[n], lw=2.5, label=str(n)) for n in names]
    handles += [Line2D([], [], color="black", ls=styles[s], lw=1.4, label=f"model: {s}")
                for s in systems]
    handles += [Line2D([], [], color="white", marker=MODE_STYLE.get(m, ("D", ""))[0], ms=8,
                       mec="black", ls="none", label=f"measured ({m})")
                for m in dict.fromkeys(predictions["mode"])]
    _gpu_axis(ax, predictions["world_size"])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("parallel efficiency [fraction of ideal]")
    ax.legend(handles=handles, fontsize=8)
    _title(ax, "Performance model: predicted efficiency vs GPUs", ctx)
    return [_save(fig, ctx, "model", "Performance model: efficiency up to "
                  f"{int(predictions['world_size'].max())} GPUs, per variant and system")]


@dataclass(frozen=True)
class FigureData:
    """The tables the report's figures are drawn from."""

    epochs: pd.DataFrame
    runs: pd.DataFrame
    scaling: pd.DataFrame
    predictions: pd.DataFrame | None
    target: float | None


def theme() -> None:
    """The look of every figure (seaborn's global theme, set before drawing)."""
    sns.set_theme(context="notebook", style="whitegrid")


def all_figures(data: FigureData, ctx: FigureContext) -> list[ReportFigure]:
    """Every figure of the report, headline ones first (those without data are left out)."""
    theme()
    made = {f.key: f for f in [*scaling_figures(data.scaling, ctx),
                               *time_to_accuracy_figure(data.runs, ctx, data.target),
                               *accuracy_figure(data.epochs, ctx),
                               *breakdown_figure(data.runs, ctx),
                               *model_figure(data.predictions, data.scaling, ctx)]}
    return [made[k] for k in FIGURE_ORDER if k in made]


#: The figures in page order: the scaling story and time to accuracy first.
FIGURE_ORDER: tuple[str, ...] = ("efficiency", "epoch_time", "time_to_accuracy", "accuracy",
                                 "speedup", "throughput", "breakdown", "model")
