"""index.html: one self-contained page (figures embedded as base64 PNG, no external files),
laid out for a reader with one minute: the headline (per variant: efficiency at the largest
scale, time to the target accuracy, the fastest variant), then the figures, then the
tables. Tables show their key columns with unit-bearing labels (:mod:`.labels`) and link the
CSV with every column, so none is wider than the page.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml
from markupsafe import Markup, escape

import benscale
from benscale.provenance import AcceleratorStack
from benscale.report.bundle import mpi_library
from benscale.report.figures import ReportFigure
from benscale.report.labels import label
from benscale.report.load import StudyResults
from benscale.report.model import MAX_GPUS, ModelSection
from benscale.report.references import CheckResult, system_note
from benscale.typed import to_mapping

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFINITIONS = {
    "strong": "Fixed global batch. speedup = T0 / T, efficiency = T0 * W0 / (W * T), with T "
              "the median steady epoch time and W0 the smallest world size of the variant "
              "in this mode.",
    "weak": "Fixed per-GPU batch. speedup = X / X0 (throughput ratio), efficiency = "
            "X * W0 / (X0 * W), with X the median steady throughput in samples/s.",
}
BEST_DEFINITION = (
    "At each mode and scale, the fastest variant is the one with the lowest median steady "
    "epoch time (every variant runs the same batches over the same samples there). Speedup "
    "and efficiency are against ONE baseline for all scales: the fastest variant at the "
    "smallest scale (strong: T0 / T; weak: throughput ratio). Communication share = "
    "communication time / epoch time; communication that runs behind backward is counted "
    "too, so the exposed share subtracts the part measured as hidden (the excess of data + "
    "compute + communication + optimizer over the epoch time).")
#: Key columns of each table in the page (the CSVs have them all).
HEADLINE_SHOWN = ["variant", "mode", "largest_world_size", "efficiency", "speedup",
                  "epoch_time_s", "vs_fastest", "time_to_target_s", "final_val_map_macro",
                  "points", "failed"]
BEST_SHOWN = ["mode", "world_size", "best_variant", "epoch_time_s", "speedup", "efficiency",
              "comm_share", "exposed_comm_share", "final_val_map_macro", "runner_up",
              "runner_up_ratio"]
SCALING_SHOWN = ["variant", "world_size", "nodes", "runs", "epoch_time_s_spread",
                 "samples_per_s_median", "speedup_spread", "efficiency_spread",
                 "comm_share_median", "test_map_macro_median", "time_to_target_s_median"]
RUN_SHOWN = ["point", "status", "world_size", "batch_per_gpu", "first_epoch_time_s",
             "epoch_time_s_median", "samples_per_s", "comm_share", "final_val_map_macro",
             "test_map_macro", "time_to_target_s"]
EPOCH_SHOWN = ["point", "epoch", "epoch_time_s", "data_time_s", "compute_time_s",
               "comm_time_s", "optimizer_time_s", "samples_per_s", "train_loss",
               "val_map_macro"]
MODEL_MEASURED_SHOWN = ["variant", "point", "measured_epoch_time_s", "predicted_epoch_time_s",
                        "ratio_predicted_to_measured", "measured_comm_time_s",
                        "predicted_comm_s"]
MODEL_PREDICTION_SHOWN = ["variant", "system", "mode", "world_size", "batch_per_gpu",
                          "epoch_time_s", "samples_per_s", "speedup", "efficiency", "notes"]
#: Columns whose values are series names, shown with their colour.
SERIES_COLUMNS = ("variant", "best_variant", "runner_up", "baseline_variant", "series")
#: Text columns whose values may be long: they wrap instead of widening the table.
WRAP_COLUMNS = ("hosts", "reason", "notes", "timing_method", "machine_description")
#: Reference notes longer than this fold behind their first words.
NOTE_FOLD = 60


def fmt(value: Any) -> str:
    """A number for a table cell: 4 significant digits, '' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def with_spread(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """``df`` plus ``<metric>_spread`` columns: "median (min-max)" in one cell."""
    out = df.copy()
    for m in metrics:
        if f"{m}_median" not in out:
            continue

        def cell(r: pd.Series, m: str = m) -> str:
            med, lo, hi = r[f"{m}_median"], r[f"{m}_min"], r[f"{m}_max"]
            return fmt(med) if fmt(lo) == fmt(hi) else f"{fmt(med)} ({fmt(lo)}..{fmt(hi)})"
        out[f"{m}_spread"] = out.apply(cell, axis=1) if len(out) else []
    return out


def _cell(column: str, value: Any, palette: dict[str, str]) -> str:
    text = fmt(value)
    if column in SERIES_COLUMNS and text in palette:
        return (f'<td class="txt"><span class="sw" style="background:{palette[text]}">'
                f'</span>{escape(text)}</td>')
    if column == "status" and text and text != "ok":
        return f'<td class="bad">{escape(text)}</td>'
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    kind = "num" if numeric else "txt wrap" if column in WRAP_COLUMNS else "txt"
    return f'<td class="{kind}">{escape(text)}</td>'


def table_html(df: pd.DataFrame | None, columns: list[str] | None = None, *,
               csv: str | None = None, palette: dict[str, str] | None = None) -> Markup:
    """A table of the key ``columns`` (those that exist) with labelled headers, in a box no
    wider than the page, and a link to the CSV that has them all."""
    if df is None or df.empty:
        return Markup("<p>(no rows)</p>")
    shown = [c for c in (columns or list(df.columns)) if c in df]
    head = "".join(f'<th title="{escape(c)}">{escape(label(c))}</th>' for c in shown)
    body = "".join(
        "<tr>" + "".join(_cell(c, v, palette or {}) for c, v in zip(shown, row, strict=True))
        + "</tr>" for row in df[shown].itertuples(index=False, name=None))
    html = (f'<div class="table"><table><thead><tr class="head">{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")
    if csv:
        written = [c for c in df.columns if not c.endswith("_spread")]
        hidden = len(written) - len([c for c in shown if not c.endswith("_spread")])
        what = (f"key columns shown; all {len(written)} in" if hidden > 0 else "also as")
        html += f'<p class="csv">{what} <a href="{escape(csv)}">{escape(csv)}</a></p>'
    return Markup(html)


@dataclass(frozen=True)
class ReportTables:
    """The report's tables as written to CSV."""

    epochs: pd.DataFrame
    runs: pd.DataFrame
    scaling: pd.DataFrame
    best: pd.DataFrame
    headline: pd.DataFrame
    variants: pd.DataFrame


@dataclass(frozen=True)
class ReportContent:
    """Everything the page shows: the study, its tables, figures, checks and model."""

    study: StudyResults
    tables: ReportTables
    figures: list[ReportFigure]
    references: list[CheckResult]
    model: ModelSection | None
    target: float | None
    palette: dict[str, str]


def _b(text: Any) -> str:
    return f"<strong>{escape(text)}</strong>"


def headline_sentences(headline: pd.DataFrame, best: pd.DataFrame,
                       target: float | None) -> list[Markup]:
    """The headline in words: per mode, the fastest variant at the largest scale and by how
    much, every variant's efficiency there, and its time to the target accuracy."""
    lines = []
    for mode, h in headline.groupby("mode", sort=False):
        w = int(h["largest_world_size"].max())
        top = h[h["largest_world_size"] == w]
        b = best[(best["mode"] == mode) & (best["world_size"] == w)]
        if len(top) > 1 and not b.empty:
            fastest = b.iloc[0]
            others = ", ".join(f"{escape(r.variant)} takes {r.vs_fastest:.2f}x as long"
                               for r in top.itertuples() if r.variant != fastest["best_variant"])
            by_scale = best[best["mode"] == mode]
            if by_scale["best_variant"].nunique() == 1:
                scales = "it is the fastest at every measured scale"
            else:
                scales = "fastest by scale: " + ", ".join(
                    f"{r.world_size} GPUs {escape(r.best_variant)}"
                    for r in by_scale.itertuples())
            lines.append(f"At {w} GPUs ({mode} scaling) {_b(fastest['best_variant'])} is "
                         f"fastest: {fmt(fastest['epoch_time_s'])} s per epoch; {others}; "
                         f"{scales}.")
        effs = ", ".join(f"{escape(r.variant)} {_b(fmt(r.efficiency))}"
                         + (f" (at {r.largest_world_size} GPUs)" if r.largest_world_size != w
                            else "") for r in h.itertuples())
        base = int(best[best["mode"] == mode]["baseline_world_size"].min()) \
            if not best.empty else w
        lines.append(f"Parallel efficiency at {w} GPUs ({mode}), each variant against its "
                     f"own {base}-GPU run: {effs} (1 = ideal).")
        if target is not None:
            ttt = ", ".join(f"{escape(r.variant)} {_b(fmt(r.time_to_target_s) or 'not reached')}"
                            + (" s" if fmt(r.time_to_target_s) else "")
                            for r in h.itertuples())
            lines.append(f"Training time to validation macro mAP {target:g} at the largest "
                         f"scale ({mode}): {ttt}.")
    return [Markup(line) for line in lines]


def gpu_stack(stack: AcceleratorStack | Mapping[str, Any]) -> str:
    """The GPU software of a run in one line ('none' without CUDA)."""
    get = stack.get if isinstance(stack, Mapping) else lambda k: getattr(stack, k, None)
    parts = [f"{name} {get(key)}" for key, name in (
        ("torch_cuda", "CUDA (torch)"), ("cuda_runtime", "CUDA runtime"), ("cudnn", "cuDNN"),
        ("nccl", "NCCL"), ("driver", "driver")) if get(key)]
    return ", ".join(parts) or "none (no CUDA)"


def _provenance_summary(study: StudyResults) -> list[tuple[str, str]]:
    """What the runs share or differ in, one line per field (the per-run table is below)."""
    recs = [r.record for r in study.runs if r.record]

    def values(get: Any) -> str:
        found = list(dict.fromkeys(str(v) for rec in recs for v in get(rec) if v))
        return ", ".join(found) or "unknown"
    dates = sorted(rec.provenance.date_utc for rec in recs if rec.provenance.date_utc)
    return [
        ("machine", f"{study.machine_name}: {study.doc.machine.description}"),
        ("dates (UTC)", f"{dates[0]} .. {dates[-1]}" if dates else "unknown"),
        ("git commit", values(lambda r: [f"{r.provenance.git.commit}"
                                          + (" (dirty)" if r.provenance.git.dirty else "")])),
        ("config hash", values(lambda r: [(r.provenance.config_hash or "")[:16]])),
        ("hosts", values(lambda r: r.world.hosts)),
        ("CPU", values(lambda r: [r.provenance.machine.cpu_model])),
        ("GPUs", values(lambda r: r.provenance.machine.gpus) if any(
            r.provenance.machine.gpus for r in recs) else "none"),
        ("GPU software", values(lambda r: [gpu_stack(r.provenance.accelerators)])),
        ("MPI library", values(lambda r: [mpi_library(r.provenance.mpi.library_version)
                                          if r.provenance.mpi else None])),
        ("launcher / backend / device",
         values(lambda r: [f"{r.world.launcher} / {r.world.backend} / {r.world.device}"])),
        ("engines", values(lambda r: [f"{r.engine.library} {r.engine.version}"])),
        ("Slurm jobs", values(lambda r: [r.provenance.slurm_job_id]) if any(
            r.provenance.slurm_job_id for r in recs) else "none (not under Slurm)"),
    ]


def _provenance_runs(study: StudyResults) -> pd.DataFrame:
    rows = []
    for rec in study.runs:
        record = rec.record
        row: dict[str, Any] = {"point": rec.name, "status": rec.status}
        if record is not None:
            prov = record.provenance
            row.update({"date_utc": prov.date_utc, "hosts": ",".join(record.world.hosts),
                        "git_commit": (prov.git.commit or "")[:12],
                        "config_hash": (prov.config_hash or "")[:12],
                        "slurm_job_id": prov.slurm_job_id})
        rows.append(row)
    return pd.DataFrame(rows)


def _packages(study: StudyResults) -> dict[str, Any]:
    for rec in study.runs:
        if rec.record and rec.record.provenance.packages:
            return rec.record.provenance.packages
    return study.doc.machine.packages


def _references(checks: list[CheckResult], machine: str) -> list[dict[str, Any]]:
    """The checks grouped by reference file, measured ones first; notes lose the system
    remark (the group says it once) and fold when long."""
    groups: dict[str, dict[str, Any]] = {}
    for c in checks:
        g = groups.setdefault(c.reference, {
            "name": c.reference, "system": c.system,
            "other_system": bool(system_note(c.system, machine)), "measured": [],
            "not_measured": []})
        note = c.note.removeprefix(system_note(c.system, machine))
        short = note if len(note) <= NOTE_FOLD else note[:NOTE_FOLD].rsplit(" ", 1)[0]
        where = ", ".join(part for part in c.where.split(", ")
                          if not part.startswith("variant="))
        g["not_measured" if c.state == "not measured" else "measured"].append(
            {"c": c, "metric": label(c.metric), "where": where, "short": short,
             "rest": note[len(short):]})
    return list(groups.values())


def _modes(content: ReportContent) -> list[dict[str, Any]]:
    t, pal = content.tables, content.palette
    out = []
    for mode in list(dict.fromkeys(t.runs["mode"].dropna())) if "mode" in t.runs else []:
        sc = t.scaling[t.scaling["mode"] == mode] if not t.scaling.empty else t.scaling
        out.append({
            "mode": mode, "definition": DEFINITIONS.get(mode, ""),
            "scaling_html": table_html(
                with_spread(sc, ["epoch_time_s", "speedup", "efficiency"]), SCALING_SHOWN,
                csv="scaling.csv", palette=pal),
            "runs_html": table_html(t.runs[t.runs["mode"] == mode], RUN_SHOWN,
                                    csv="runs.csv", palette=pal),
            "epochs_html": table_html(
                t.epochs[t.epochs["mode"] == mode] if "mode" in t.epochs else t.epochs,
                EPOCH_SHOWN, csv="epochs.csv", palette=pal)})
    return out


def render(content: ReportContent, out: Path) -> str:
    """The HTML text of the report (figures read from ``out``)."""
    study, t, model, pal = content.study, content.tables, content.model, content.palette
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.globals["fmt"] = fmt
    figs = [{"key": f.key, "caption": f.caption, "png": f.png, "svg": f.svg,
             "b64": base64.b64encode((out / f.png).read_bytes()).decode()}
            for f in content.figures]
    failed = [{"name": r.name, "reason": r.reason, "log": str(r.log_path),
               "log_tail": r.log_tail} for r in study.runs if not r.ok]
    return env.get_template("report.html").render(
        study=study.name, machine=study.machine_name,
        machine_description=study.doc.machine.description,
        generated_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        version=benscale.__version__, n_points=len(study.runs), n_failed=len(failed),
        n_ok=len(study.runs) - len(failed), target=content.target,
        palette=pal,
        sentences=headline_sentences(t.headline, t.best, content.target),
        headline_html=table_html(t.headline, HEADLINE_SHOWN, csv="headline.csv", palette=pal),
        variants_html=table_html(t.variants, palette=pal),
        best_html=table_html(t.best, BEST_SHOWN, csv="best_by_scale.csv", palette=pal),
        best_definition=BEST_DEFINITION,
        modes=_modes(content), figures=figs,
        references=_references(content.references, study.machine_name),
        model=model, max_gpus=MAX_GPUS,
        model_measured_html=table_html(model.measured, MODEL_MEASURED_SHOWN,
                                       csv="perfmodel_measured.csv", palette=pal)
        if model else "",
        model_predictions_html=table_html(model.predictions, MODEL_PREDICTION_SHOWN,
                                          csv="perfmodel_prediction.csv", palette=pal)
        if model else "",
        failed=failed, provenance=_provenance_summary(study),
        provenance_html=table_html(_provenance_runs(study), palette=pal),
        packages=json.dumps(_packages(study), indent=1),
        machine_json=json.dumps(to_mapping(study.doc.machine), indent=1, default=str),
        config_yaml=yaml.safe_dump(study.doc.config.to_dict(), sort_keys=False),
    )
