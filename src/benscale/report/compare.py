"""``benscale compare``: several studies' reports on one page.

A user puts a study of their cluster next to an earlier or a published one: each REPORT_DIR
is a folder written by ``benscale report`` (report.json, runs.csv, scaling.csv, headline.csv
and the bundle's study.json / machine.json / packages.json for provenance); nothing is
re-measured and no run directory is read. Each study's variants become series
``<label> / <variant>`` with a colour of their own; the figures overlay them on shared axes.
Writes into DIR (docs/report.md):

    index.html                    self-contained page: at a glance, comparability notes,
                                  figures, epoch time and efficiency per GPU count, each
                                  study's provenance
    figures/*.png, figures/*.svg  epoch time, speedup, efficiency, throughput vs GPUs (and
                                  time to accuracy when every study used the same target)
    scaling.csv, runs.csv         the studies' tables stacked, with study/machine/series
    headline.csv                  per series and mode: its largest scale at a glance
    studies.csv                   one row per study: its provenance
    compare.json                  what was written, for tools
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

import benscale
from benscale.atomic import write_json, write_text
from benscale.errors import ConfigError
from benscale.files.bundle import BUNDLE_DIR, MACHINE_JSON, PACKAGES_JSON
from benscale.files.study import STUDY_JSON, StudyDocument
from benscale.report import figures, tables
from benscale.report.html import TEMPLATES, fmt, gpu_stack, table_html

#: Files a folder must have to be read as a benscale report.
REQUIRED = ("report.json", "runs.csv", "scaling.csv")
#: Packages whose versions the provenance table shows.
SHOWN_PACKAGES = ("benscale", "torch", "deepspeed", "numpy")
#: Settings that decide whether two studies' numbers compare (study config keys).
COMPARABILITY = ("global_batch", "batch_per_gpu", "epochs", "precision", "data")
HEADLINE_SHOWN = ["series", "machine", "mode", "largest_world_size", "epoch_time_s",
                  "samples_per_s", "efficiency", "speedup", "time_to_target_s",
                  "final_val_map_macro", "failed"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``benscale compare``."""
    parser.add_argument("reports", nargs="+", type=Path, metavar="REPORT_DIR",
                        help="folders written by `benscale report` (2 or more)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--label", action="append", default=None, metavar="NAME",
                        help="a short name per REPORT_DIR, in order (default: the study's "
                             "name, with its machine where two studies share a name)")


@dataclass(frozen=True)
class StudyProvenance:
    """Where and how a study was measured, as its report recorded it."""

    label: str
    study: str
    machine: str
    machine_description: str
    planned_utc: str
    run_dates_utc: str
    hosts: str
    cpu: str
    gpus: str
    gpu_software: str
    mpi_library: str
    launch: str
    git_commit: str
    packages: str
    variants: str
    points: int
    failed: int
    global_batch: str
    batch_per_gpu: str
    epochs: str
    precision: str
    data: str
    target_map_macro: float | None
    report_dir: str


@dataclass(frozen=True)
class ReportInput:
    """One report folder as the comparison reads it."""

    path: Path
    label: str
    summary: dict[str, Any]
    runs: pd.DataFrame
    scaling: pd.DataFrame
    headline: pd.DataFrame
    provenance: StudyProvenance


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a benscale report folder (None: it is one)."""
    if not path.is_dir():
        return "no such folder"
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        return f"no {', '.join(missing)}"
    return None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc


def _summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads((path / "report.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a benscale report (report.json unreadable: {exc})") \
            from exc
    if not isinstance(summary, dict) or "study" not in summary:
        raise ConfigError(f"{path}: not a benscale report (report.json has no 'study'; "
                          "write the folder with `benscale report`)")
    return summary


def _joined(values: Any) -> str:
    found = list(dict.fromkeys(str(v) for v in values if v is not None and str(v) not in
                               ("", "nan", "None")))
    return ", ".join(found) or "unknown"


def _provenance(path: Path, label: str, summary: dict[str, Any],
                runs: pd.DataFrame) -> StudyProvenance:
    """The study's provenance from its report: runs.csv, and the bundle when present."""
    bundle = path / BUNDLE_DIR
    doc = StudyDocument.read(bundle / STUDY_JSON) if (bundle / STUDY_JSON).is_file() else None
    machines = _json(bundle / MACHINE_JSON).get("runs", {})
    packages = _json(bundle / PACKAGES_JSON)
    hosts = [m.get("machine", {}) for m in machines.values()]
    col = runs.get
    dates = sorted(str(d) for d in (col("date_utc") if "date_utc" in runs else [])
                   if isinstance(d, str))
    cfg = doc.config if doc else None
    return StudyProvenance(
        label=label, study=str(summary["study"]),
        machine=str(summary.get("machine") or "unknown machine"),
        machine_description=doc.machine.description if doc else "(no bundle/study.json)",
        planned_utc=doc.created_utc if doc else "unknown",
        run_dates_utc=f"{dates[0]} .. {dates[-1]}" if dates else "unknown",
        hosts=_joined(h for v in (col("hosts") if "hosts" in runs else []) if isinstance(v, str)
                      for h in v.split(",")),
        cpu=_joined(f"{h.get('cpu_model')} ({h.get('cpu_count')} cores)" for h in hosts
                    if h.get("cpu_model")),
        gpus=_joined(g for h in hosts for g in h.get("gpus") or []) if any(
            h.get("gpus") for h in hosts) else "none",
        gpu_software=_joined(gpu_stack(m.get("accelerators") or {}) for m in machines.values()),
        mpi_library=_joined(m.get("mpi_library") for m in machines.values()),
        launch=_joined(f"{r.launcher} / {r.backend}" for r in runs.itertuples()
                       if isinstance(getattr(r, "launcher", None), str)),
        git_commit=_joined(f"{str(c)[:12]}" + (" (dirty)" if str(d) == "True" else "")
                           for c, d in zip(col("git_commit", []), col("git_dirty", []),
                                           strict=False)),
        packages=", ".join(f"{k} {packages[k]}" for k in SHOWN_PACKAGES if packages.get(k))
        or "unknown",
        variants=", ".join(summary.get("variants") or _variants(runs)),
        points=int(summary.get("points", len(runs))), failed=len(summary.get("failed", [])),
        global_batch=str(cfg.study.global_batch) if cfg else "unknown",
        batch_per_gpu=str(cfg.study.batch_per_gpu) if cfg else "unknown",
        epochs=str(cfg.train.epochs) if cfg else "unknown",
        precision=_joined(runs["precision"]) if "precision" in runs else "unknown",
        data=(cfg.data.archive or f"synthetic ({cfg.data.synth.patches} patches)")
        if cfg else "unknown",
        target_map_macro=summary.get("target_map_macro"),
        report_dir=str(path.resolve()),
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _variants(runs: pd.DataFrame) -> list[str]:
    return tables.variant_order(runs) or ["default"]


def read_report(path: Path, label: str) -> ReportInput:
    """One report folder, its tables tagged with the study's label.

    Raises:
        ConfigError: the folder is not a benscale report, naming it and what is missing.
    """
    why = _problem(path)
    if why:
        raise ConfigError(f"{path}: not a benscale report folder ({why}); pass folders "
                          "written by `benscale report --out DIR`")
    summary = _summary(path)
    runs = _read_csv(path / "runs.csv")
    scaling = _read_csv(path / "scaling.csv")
    for df in (runs, scaling):
        if "variant" not in df:  # a report from before variants: one, unnamed
            df.insert(0, "variant", "default")
    headline = _read_csv(path / "headline.csv") if (path / "headline.csv").is_file() \
        else tables.headline(runs, scaling)
    return ReportInput(path, label, summary, runs, scaling, headline,
                       _provenance(path, label, summary, runs))


def labels_for(paths: list[Path], given: list[str] | None) -> list[str]:
    """One distinct label per report: given ones, else the study's name, with its machine
    where names repeat, and a number where both do.

    Raises:
        ConfigError: a different number of labels than reports, or repeated labels.
    """
    if given is not None:
        if len(given) != len(paths):
            raise ConfigError(f"--label given {len(given)} times for {len(paths)} report "
                              "folders; give one per REPORT_DIR, in order, or none")
        if len(set(given)) != len(given):
            raise ConfigError(f"--label: repeated labels {given}; each study needs its own")
        return list(given)
    summaries = [_summary(p) if not _problem(p) else {"study": p.name} for p in paths]
    names = [str(s["study"]) for s in summaries]
    out = [n if names.count(n) == 1 else f"{n}@{s.get('machine', '?')}"
           for n, s in zip(names, summaries, strict=True)]
    return [o if out.count(o) == 1 else f"{o}#{i + 1}" for i, o in enumerate(out)]


def _tagged(report: ReportInput, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the study's label, machine and series columns first."""
    out = df.copy()
    series = report.label + " / " + out["variant"].astype(str)
    front = {"study": report.label, "machine": report.provenance.machine, "series": series}
    for i, (key, value) in enumerate(front.items()):
        if key in out:
            out = out.drop(columns=key)
        out.insert(i, key, value)
    return out


@dataclass(frozen=True)
class Combined:
    """The studies' tables stacked, and one colour per series."""

    scaling: pd.DataFrame
    runs: pd.DataFrame
    headline: pd.DataFrame
    studies: pd.DataFrame
    palette: dict[str, str]


def combine(reports: list[ReportInput]) -> Combined:
    """Stack the reports' tables; the headline gains each series' throughput."""
    scaling = pd.concat([_tagged(r, r.scaling) for r in reports], ignore_index=True)
    runs = pd.concat([_tagged(r, r.runs) for r in reports], ignore_index=True)
    head = pd.concat([_tagged(r, r.headline) for r in reports if not r.headline.empty],
                     ignore_index=True) if any(not r.headline.empty for r in reports) \
        else pd.DataFrame(columns=["series", "mode"])
    if not head.empty and "samples_per_s_median" in scaling:
        x = scaling.set_index(["series", "mode", "world_size"])["samples_per_s_median"]
        head.insert(head.columns.get_loc("epoch_time_s") + 1, "samples_per_s", [
            float(x.get((s, m, w), float("nan"))) for s, m, w in
            zip(head["series"], head["mode"], head["largest_world_size"], strict=True)])
    series = list(dict.fromkeys([*scaling["series"], *runs["series"]]))
    studies = pd.DataFrame([asdict(r.provenance) for r in reports])
    return Combined(scaling, runs, head, studies, figures.palette(series))


def comparability(reports: list[ReportInput]) -> list[str]:
    """What differs between the studies beyond machine and variants, in words: numbers of
    studies with other batches, epochs, precision, data or targets compare with care."""
    notes = []
    for key in COMPARABILITY:
        values = {r.label: getattr(r.provenance, key) for r in reports}
        if len(set(values.values())) > 1:
            notes.append(f"{key.replace('_', ' ')} differs: " +
                         ", ".join(f"{k} {v}" for k, v in values.items()))
    targets = {r.label: r.provenance.target_map_macro for r in reports}
    if len(set(targets.values())) > 1:
        notes.append("time-to-accuracy targets differ (each study's own, so its times do not "
                     "compare): " + ", ".join(f"{k} {fmt(v)}" for k, v in targets.items()))
    return notes


def pivot(scaling: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` per line (rows: series and mode) and GPU count (columns)."""
    if metric not in scaling or scaling[metric].isna().all():
        return pd.DataFrame()
    wide = scaling.pivot_table(index=["series", "mode"], columns="world_size", values=metric,
                               aggfunc="first", sort=False)
    wide = wide[sorted(wide.columns)]
    wide.columns = [f"{int(w)} GPUs" for w in wide.columns]
    order = list(dict.fromkeys(zip(scaling["series"], scaling["mode"], strict=True)))
    return wide.reindex(order).reset_index()


def provenance_table(reports: list[ReportInput], palette: dict[str, str]) -> Markup:
    """The studies' provenance side by side, one column per study; rows where the studies
    differ are marked."""
    fields = [k for k in asdict(reports[0].provenance) if k != "label"]
    def swatches(label: str) -> str:
        return "".join(f'<span class="sw" style="background:{c}" title="{escape(s)}"></span>'
                       for s, c in palette.items() if s.startswith(f"{label} / "))
    head = "<th>field</th>" + "".join(
        f"<th>{swatches(r.label)}{escape(r.label)}</th>" for r in reports)
    rows = []
    for key in fields:
        values = [fmt(getattr(r.provenance, key)) for r in reports]
        differ = len(set(values)) > 1
        cells = "".join(f'<td class="txt wrap">{escape(v)}</td>' for v in values)
        rows.append(f'<tr class="{"diff" if differ else ""}"><td class="txt">'
                    f"{escape(key.replace('_', ' '))}</td>{cells}</tr>")
    return Markup(f'<div class="table"><table class="prov"><thead><tr class="head">{head}'
                  f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _sentences(head: pd.DataFrame, scaling: pd.DataFrame) -> list[Markup]:
    """Per mode: the fastest series at the largest GPU count every study measured, and each
    series' efficiency at its own largest scale."""
    lines = []
    for mode, sc in scaling.groupby("mode", sort=False):
        sizes = [set(g["world_size"]) for _, g in sc.groupby("study", sort=False)]
        common = set.intersection(*sizes) if sizes else set()
        if common and len(sizes) > 1:
            w = max(common)
            at = sc[sc["world_size"] == w].sort_values("epoch_time_s_median")
            t0 = float(at["epoch_time_s_median"].iloc[0])
            others = "; ".join(f"{escape(r.series)} {r.epoch_time_s_median / t0:.2f}x as long"
                               for r in at.iloc[1:].itertuples())
            lines.append(f"At {w} GPUs ({escape(mode)}), the largest scale every study "
                         f"measured, <strong>{escape(at['series'].iloc[0])}</strong> is "
                         f"fastest: {fmt(t0)} s per epoch" + (f"; {others}" if others else "")
                         + ".")
        elif len(sizes) > 1:
            lines.append(f"No GPU count ({escape(mode)}) was measured by every study: compare "
                         "the curves.")
        h = head[head["mode"] == mode]
        if not h.empty:
            lines.append(f"Efficiency at each line's largest scale ({escape(mode)}, against "
                         "its own smallest): " + ", ".join(
                             f"{escape(r.series)} <strong>{fmt(r.efficiency)}</strong> at "
                             f"{r.largest_world_size} GPUs" for r in h.itertuples()) + ".")
    return [Markup(line) for line in lines]


def build_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Write every output of ``benscale compare``; returns compare.json's content."""
    paths = [Path(p) for p in args.reports]
    out = Path(args.out)
    if len(paths) < 2:
        raise ConfigError("benscale compare needs two or more report folders")
    if any(out.resolve() == p.resolve() for p in paths):
        raise ConfigError(f"--out {out} is one of the report folders; write elsewhere")
    labels = labels_for(paths, args.label)
    reports = [read_report(p, lab) for p, lab in zip(paths, labels, strict=True)]
    data = combine(reports)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("scaling", data.scaling), ("runs", data.runs),
                     ("headline", data.headline), ("studies", data.studies)):
        write_text(out / f"{name}.csv", df.to_csv(index=False))
    machines = list(dict.fromkeys(r.provenance.machine for r in reports))
    ctx = figures.FigureContext(out / "figures", " vs ".join(labels), " / ".join(machines),
                                data.palette, hue="series")
    figures.theme()
    figs = figures.scaling_figures(data.scaling, ctx)
    targets = {r.provenance.target_map_macro for r in reports}
    if len(targets) == 1 and None not in targets:
        figs += figures.time_to_accuracy_figure(data.runs, ctx, targets.pop())
    figs = [f for k in figures.FIGURE_ORDER for f in figs if f.key == k]
    notes = comparability(reports)
    write_text(out / "index.html", render(reports, data, figs, notes, out))
    summary = {
        "studies": [asdict(r.provenance) for r in reports],
        "series": list(data.palette), "colours": data.palette,
        "figures": [f.png for f in figs] + [f.svg for f in figs],
        "tables": ["scaling.csv", "runs.csv", "headline.csv", "studies.csv"],
        "comparability": notes,
    }
    write_json(out / "compare.json", summary)
    return summary


def render(reports: list[ReportInput], data: Combined, figs: list[figures.ReportFigure],
           notes: list[str], out: Path) -> str:
    """The comparison page (figures read from ``out``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]))
    pal = data.palette
    studies = [{"label": r.label, "machine": r.provenance.machine,
                "link": Path(os.path.relpath(r.path.resolve() / "index.html",
                                             out.resolve())).as_posix(),
                "series": [s for s in pal if s.startswith(f"{r.label} / ")]}
               for r in reports]
    return env.get_template("compare.html").render(
        labels=[r.label for r in reports], machines=[r.provenance.machine for r in reports],
        palette=pal, generated_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        version=benscale.__version__, notes=notes,
        sentences=_sentences(data.headline, data.scaling),
        headline_html=table_html(data.headline, HEADLINE_SHOWN, csv="headline.csv",
                                 palette=pal),
        figures=[{"key": f.key, "caption": f.caption, "png": f.png, "svg": f.svg,
                  "b64": base64.b64encode((out / f.png).read_bytes()).decode()}
                 for f in figs],
        epoch_html=table_html(pivot(data.scaling, "epoch_time_s_median"), csv="scaling.csv",
                              palette=pal),
        efficiency_html=table_html(pivot(data.scaling, "efficiency_median"),
                                   csv="scaling.csv", palette=pal),
        studies=studies, provenance_html=provenance_table(reports, pal))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``benscale compare``."""
    summary = build_compare(args)
    print(f"benscale compare: {args.out / 'index.html'}: {len(summary['studies'])} studies, "
          f"{len(summary['series'])} series, {len(summary['figures']) // 2} figures",
          file=sys.stderr)
    return 0
