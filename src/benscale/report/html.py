"""index.html: one self-contained page (figures embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml

import benscale
from benscale.report.figures import ReportFigure
from benscale.report.load import StudyResults
from benscale.report.model import MAX_GPUS, ModelSection
from benscale.report.references import CheckResult
from benscale.typed import to_mapping

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFINITIONS = {
    "strong": "Fixed global batch. speedup = T0 / T, efficiency = T0 * W0 / (W * T), with T "
              "the median steady epoch time and W0 the smallest world size of this mode.",
    "weak": "Fixed per-GPU batch. speedup = X / X0 (throughput ratio), efficiency = "
            "X * W0 / (X0 * W), with X the median steady throughput in samples/s.",
}
RUN_COLUMNS = ["point", "status", "nodes", "world_size", "global_batch", "batch_per_gpu",
               "precision", "zero_stage", "epochs", "first_epoch_time_s",
               "epoch_time_s_median", "samples_per_s", "best_val_map_macro",
               "final_val_map_macro", "test_map_macro", "test_f1_macro", "time_to_target_s"]


#: The columns of the per-epoch table in the page (epochs.csv has them all).
EPOCH_COLUMNS = ["point", "epoch", "world_size", "epoch_time_s", "data_time_s",
                 "compute_time_s", "comm_time_s", "optimizer_time_s", "samples_per_s",
                 "train_loss", "val_loss", "val_map_macro", "val_map_micro", "val_f1_macro",
                 "val_f1_micro"]


def fmt(value: Any) -> str:
    """A number for a table cell: 4 significant digits, '' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_html(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A DataFrame as an HTML table (selected columns that exist)."""
    if df is None or df.empty:
        return "<p>(no rows)</p>"
    if columns:
        df = df[[c for c in columns if c in df]]
    return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)


@dataclass(frozen=True)
class ReportContent:
    """Everything the page shows: the study, its tables, figures, checks and model."""

    study: StudyResults
    epochs: pd.DataFrame
    runs: pd.DataFrame
    scaling: pd.DataFrame
    figures: list[ReportFigure]
    references: list[CheckResult]
    model: ModelSection | None
    target: float | None


def _provenance(study: StudyResults) -> pd.DataFrame:
    rows = []
    for rec in study.runs:
        record = rec.record
        if record is None:
            rows.append({"point": rec.name, "status": rec.status})
            continue
        prov, world = record.provenance, record.world
        rows.append({
            "point": rec.name, "status": rec.status,
            "git_commit": prov.git.commit, "dirty": prov.git.dirty,
            "config_hash": (prov.config_hash or "")[:16],
            "date_utc": prov.date_utc, "hosts": ",".join(world.hosts),
            "launcher": world.launcher, "backend": world.backend,
            "device": world.device, "cpu": prov.machine.cpu_model,
            "gpus": ",".join(prov.machine.gpus) or None,
            "slurm_job_id": prov.slurm_job_id,
        })
    return pd.DataFrame(rows)


def _packages(study: StudyResults) -> dict[str, Any]:
    for rec in study.runs:
        if rec.record and rec.record.provenance.packages:
            return rec.record.provenance.packages
    return study.doc.machine.packages


def render(content: ReportContent, out: Path) -> str:
    """The HTML text of the report (figures read from ``out``)."""
    study, runs, scaling, epochs = content.study, content.runs, content.scaling, content.epochs
    model = content.model
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.globals["fmt"] = fmt
    figs = [{"key": f.key, "caption": f.caption, "png": f.png, "svg": f.svg,
             "b64": base64.b64encode((out / f.png).read_bytes()).decode()}
            for f in content.figures]
    modes = []
    for mode in sorted(runs["mode"].dropna().unique()) if "mode" in runs else []:
        sc = scaling[scaling["mode"] == mode] if not scaling.empty else scaling
        modes.append({"mode": mode, "definition": DEFINITIONS.get(mode, ""),
                      "scaling_html": table_html(sc),
                      "runs_html": table_html(runs[runs["mode"] == mode], RUN_COLUMNS),
                      "epochs_html": table_html(
                          epochs[epochs["mode"] == mode] if "mode" in epochs else epochs,
                          EPOCH_COLUMNS)})
    failed = [{"name": r.name, "reason": r.reason, "log": str(r.log_path),
               "log_tail": r.log_tail} for r in study.runs if not r.ok]
    return env.get_template("report.html").render(
        study=study.name, machine=study.machine_name,
        machine_description=study.doc.machine.description,
        generated_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        version=benscale.__version__, n_points=len(study.runs), n_failed=len(failed),
        n_ok=len(study.runs) - len(failed), target=content.target,
        scaling_html=table_html(scaling, ["mode", "world_size", "nodes", "runs",
                                          "epoch_time_s_median", "samples_per_s_median",
                                          "speedup_median", "speedup_min", "speedup_max",
                                          "efficiency_median", "efficiency_min",
                                          "efficiency_max", "test_map_macro_median"]),
        modes=modes, figures=figs, references=content.references, model=model,
        max_gpus=MAX_GPUS,
        model_measured_html=table_html(model.measured) if model else "",
        model_predictions_html=table_html(model.predictions, [
            "system", "mode", "nodes", "world_size", "batch_per_gpu", "steps", "compute_s",
            "comm_s", "exposed_comm_s", "step_s", "epoch_time_s", "samples_per_s",
            "speedup", "efficiency", "notes"]) if model else "",
        failed=failed, provenance_html=table_html(_provenance(study)),
        packages=json.dumps(_packages(study), indent=1),
        machine_json=json.dumps(to_mapping(study.doc.machine), indent=1, default=str),
        config_yaml=yaml.safe_dump(study.doc.config.to_dict(), sort_keys=False),
    )
