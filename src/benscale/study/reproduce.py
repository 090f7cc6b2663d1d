"""``benscale reproduce BUNDLE``: re-run a study's points and compare, metric by metric.

How it re-runs (docs/report.md, "Reproducing a study"): by default each chosen point is run
directly with ``benscale train``, under the SAME launcher prefix the workflow uses
(:func:`benscale.study.launchers.launcher_argv`: mpiexec/torchrun with emulated nodes, srun
inside an allocation) and with the run's RECORDED resolved config (run.json ``config``,
written to ``OUT/configs/<point>.yaml``), so nothing is re-derived from defaults that may
have changed since. This needs no Snakemake and works on any machine that has the shards
(``--data``). With ``--profile P`` the whole study is instead re-run by ``snakemake
--profile P`` as a subprocess (the bundle's resolved config as ``--configfile``, in
``OUT/work``), data stages included; the comparison is the same.

The comparison (``OUT/comparison.csv`` and ``comparison.md``):

- metrics (losses, mAP, F1, precision/recall per epoch; test metrics): equal within
  ``--metric-atol`` (default 0: bit-identical, what CPU runs with the same seeds and world
  size give; on GPUs cuDNN/NCCL are not deterministic, pass e.g. 1e-2);
- timings (epoch time, throughput, the data/compute/comm/optimizer parts): the ratio
  new/original within ``[1/F, F]`` with ``--time-factor F`` (default 3: machines, load and
  noise differ; a timing is evidence, not an identity).

Exit status: 0 when every compared value agrees, 1 when any does not.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benscale.atomic import write_text
from benscale.errors import ConfigError, DataError
from benscale.files.run import EPOCHS_CSV, RESULT_COLUMNS, TIMING_COLUMNS, RunRecord
from benscale.files.shards import MANIFEST_NAME
from benscale.files.study import STUDY_JSON, DebugSection, Point, StudyDocument
from benscale.study import launchers
from benscale.study.plan import set_args

#: Test metrics of run.json compared for (near-)equality.
TEST_METRICS: tuple[str, ...] = ("map_macro", "map_micro", "f1_macro", "f1_micro",
                                 "precision_micro", "recall_micro", "loss")


@dataclass(frozen=True)
class Tolerances:
    """How close a re-run must come: metrics absolutely, timings as a ratio factor."""

    metric_atol: float = 0.0
    time_factor: float = 3.0


@dataclass(frozen=True)
class Bundle:
    """A study to reproduce: its document and the folder its paths are relative to."""

    doc: StudyDocument
    base: Path

    @classmethod
    def read(cls, bundle: Path) -> Bundle:
        """The bundle's study.json (a bundle folder, or a study.json itself)."""
        path = bundle / STUDY_JSON if bundle.is_dir() else bundle
        try:
            doc = StudyDocument.read(path)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; pass the bundle/ folder of a report") from None
        return cls(doc, path.resolve().parent)

    def recorded_config(self, point: Point) -> dict[str, Any] | None:
        """The resolved train config recorded in the point's original run.json, with the
        threads the run resolved (``threads: null`` depends on the machine's cores)."""
        try:
            record = RunRecord.read(self.base / point.run_dir)
        except DataError:
            return None
        return {**record.config, "threads": record.runtime.threads}


# --------------------------------------------------------------------------- running
def choose_points(doc: StudyDocument, names: list[str] | None) -> tuple[Point, ...]:
    """The study's points, or only ``names`` (error naming the unknown ones)."""
    if not names:
        return doc.points
    known = {p.name for p in doc.points}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--points {unknown}: not in the study; its points are "
                          f"{sorted(known)}")
    return tuple(p for p in doc.points if p.name in names)


def train_argv(bundle: Bundle, point: Point, data: Path, run_dir: Path,
               config_file: Path | None, launcher: str | None = None) -> list[str]:
    """The full command of one point: launcher prefix + ``benscale train``.

    With ``config_file`` (the recorded resolved config) no ``--set`` is added; without it,
    the point's ``--set`` items come from :func:`benscale.study.plan.set_args` exactly as
    in the workflow.
    """
    cfg = bundle.doc.config
    kind = launcher or cfg.launcher.kind
    if kind in launchers.CLUSTER_LAUNCHERS and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(f"the study was launched with {kind!r}, which needs a Slurm "
                          "allocation; run inside one (salloc) or pass --launcher mpiexec")
    prefix = launchers.launcher_argv(kind, point.nodes, point.gpus_per_node,
                                     launchers.threads_per_rank(cfg, kind),
                                     cfg.slurm.gpu_request)
    launchers.check_found(prefix)
    cmd = ["benscale", "train", "--data", str(data), "--out", str(run_dir)]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    else:
        if cfg.train.config:
            cmd += ["--config", str(cfg.train.config)]
        cmd += set_args(point, cfg)
    return [*prefix, *cmd]


def run_point(bundle: Bundle, point: Point, data: Path, out: Path,
              launcher: str | None = None, use_recorded: bool = True) -> int:
    """Run one point into ``out/<run_dir>``, its log into ``out/<log>``; returns the exit code."""
    run_dir = out / point.run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: never resume from someone else's checkpoint
    config_file = None
    recorded = bundle.recorded_config(point) if use_recorded else None
    if recorded is not None:
        config_file = out / "configs" / f"{point.name}.yaml"
        write_text(config_file, yaml.safe_dump(recorded, sort_keys=False))
    argv = train_argv(bundle, point, data, run_dir, config_file, launcher)
    log = out / point.log
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"benscale reproduce: {point.name}: {' '.join(argv)}", file=sys.stderr)
    with log.open("w") as fh:
        return subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


def run_snakemake(bundle: Bundle, profile: str, out: Path, snakefile: Path,
                  points: tuple[Point, ...] | None = None) -> int:
    """Re-run the study with Snakemake (a subprocess) into ``out/work``: everything, or
    with ``points`` only their training jobs (and the data stages they need)."""
    config = replace(bundle.doc.config, debug=DebugSection(kill_points=(),
                                                           kill_after_s=1))
    cfg_file = out / "study-config.yaml"
    write_text(cfg_file, yaml.safe_dump(config.to_dict(), sort_keys=False))
    argv = ["snakemake", "-s", str(snakefile), "--directory", str(out / "work"),
            "--profile", profile, "--configfile", str(cfg_file)]
    if points is not None:  # targets: the points' run.json, as the workflow names them
        argv += [f"results/{bundle.doc.study}/{p.run_dir}/run.json" for p in points]
    print(f"benscale reproduce: {' '.join(argv)}", file=sys.stderr)
    return subprocess.run(argv, check=False).returncode


# --------------------------------------------------------------------------- comparing
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row(point: str, epoch: Any, metric: str, kind: str, orig: Any, new: Any,
         tol: Tolerances) -> dict[str, Any]:
    missing = _missing(orig) or _missing(new)
    base = {"point": point, "epoch": epoch, "metric": metric, "kind": kind,
            "original": orig, "new": new}
    if kind == "timing":
        ratio = (new / orig) if not missing and orig else math.nan
        agree = (not missing and orig > 0 and new > 0
                 and 1 / tol.time_factor <= ratio <= tol.time_factor) or (
                     not missing and orig == new == 0)
        return {**base, "difference": math.nan, "ratio": ratio,
                "tolerance": f"ratio in [1/{tol.time_factor:g}, {tol.time_factor:g}]",
                "agree": bool(agree)}
    diff = abs(new - orig) if not missing else math.nan
    both_nan = (orig is not None and new is not None and math.isnan(float(orig))
                and math.isnan(float(new)))
    agree = both_nan or (not missing and diff <= tol.metric_atol)
    return {**base, "difference": diff, "ratio": math.nan,
            "tolerance": "bit-identical" if tol.metric_atol == 0 else
            f"|diff| <= {tol.metric_atol:g}", "agree": bool(agree)}


def _status_row(name: str, orig: str, new: str, tolerance: str, agree: bool) -> dict[str, Any]:
    return {"point": name, "epoch": None, "metric": "status", "kind": "status",
            "original": orig, "new": new, "difference": math.nan, "ratio": math.nan,
            "tolerance": tolerance, "agree": agree}


def compare_run(name: str, orig_dir: Path, new_dir: Path, tol: Tolerances) -> list[dict]:
    """Metric-by-metric comparison of one point's original and new run directory."""
    try:
        a = pd.read_csv(orig_dir / EPOCHS_CSV)
        b = pd.read_csv(new_dir / EPOCHS_CSV)
        ja, jb = RunRecord.read(orig_dir), RunRecord.read(new_dir)
    except (OSError, ValueError, DataError) as exc:
        row = _status_row(name, "present", f"missing ({exc})", "run completes", False)
        return [{**row, "metric": "run"}]
    rows = [_status_row(name, ja.status, jb.status, "equal", ja.status == jb.status)]
    merged = a.merge(b, on="epoch", how="outer", suffixes=("_orig", "_new"))
    for _, r in merged.iterrows():
        for m in RESULT_COLUMNS:
            if f"{m}_orig" in r:
                rows.append(_row(name, int(r["epoch"]), m, "metric", r[f"{m}_orig"],
                                 r[f"{m}_new"], tol))
    for t in TIMING_COLUMNS:
        if t in a and t in b:
            rows.append(_row(name, "median", t, "timing", float(a[t].median()),
                             float(b[t].median()), tol))
    ta, tb = ja.test, jb.test
    for m in TEST_METRICS:
        if ta is not None or tb is not None:
            rows.append(_row(name, "test", f"test_{m}", "metric",
                             getattr(ta, m) if ta else None, getattr(tb, m) if tb else None,
                             tol))
    return rows


def markdown(df: pd.DataFrame, title: str) -> str:
    """The comparison as a markdown table with a summary line."""
    n_bad = int((~df["agree"]).sum()) if not df.empty else 0
    lines = [f"# {title}", "", f"{len(df)} values compared, {n_bad} disagree.", "",
             "| point | epoch | metric | kind | original | new | diff | ratio | tolerance |"
             " agree |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6g}"
        return "" if v is None else str(v)

    for _, r in df.iterrows():
        lines.append("| " + " | ".join(cell(r[c]) for c in (
            "point", "epoch", "metric", "kind", "original", "new", "difference", "ratio",
            "tolerance")) + f" | {'yes' if r['agree'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``benscale reproduce``."""
    parser.add_argument("bundle", type=Path, help="a report's bundle/ folder (or its study.json)")
    parser.add_argument("--out", type=Path, default=Path("reproduce"),
                        help="folder for the new runs and the comparison (default: reproduce)")
    parser.add_argument("--points", nargs="+", default=None, metavar="NAME",
                        help="only these points (default: all)")
    parser.add_argument("--data", type=Path, default=None,
                        help="shards folder (default: the study's data.workdir/shards)")
    parser.add_argument("--launcher", default=None,
                        choices=[*launchers.LOCAL_LAUNCHERS, *launchers.CLUSTER_LAUNCHERS],
                        help="override the study's launcher (e.g. mpiexec off a cluster)")
    parser.add_argument("--profile", default=None,
                        help="re-run the study with `snakemake --profile PROFILE` (only "
                             "--points, if given) instead of running the points directly")
    parser.add_argument("--snakefile", type=Path, default=None,
                        help="with --profile: the Snakefile (default: the one study.json "
                             "records)")
    parser.add_argument("--metric-atol", type=float, default=0.0,
                        help="absolute tolerance of metrics (default 0: bit-identical)")
    parser.add_argument("--time-factor", type=float, default=3.0,
                        help="timings agree when new/original is within [1/F, F] (default 3)")


def _data_dir(bundle: Bundle, given: Path | None) -> Path:
    path = given if given is not None else Path(bundle.doc.config.data.workdir) / "shards"
    if not (path / MANIFEST_NAME).is_file():
        raise ConfigError(f"{path}: no shards ({MANIFEST_NAME} missing); pass --data with the "
                          "output of `benscale extract` for this study's archive, or use "
                          "--profile to re-run the data stages too")
    return path


def _snakefile(bundle: Bundle, given: Path | None) -> Path:
    path = given or (Path(bundle.doc.snakefile) if bundle.doc.snakefile else None)
    if path is None or not path.is_file():
        raise ConfigError(f"no Snakefile to re-run the study with (study.json records "
                          f"{bundle.doc.snakefile!r}); pass --snakefile with the Snakefile of "
                          "a benscale checkout")
    return path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``benscale reproduce``."""
    bundle = Bundle.read(args.bundle)
    doc = bundle.doc
    points = choose_points(doc, args.points)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tol = Tolerances(args.metric_atol, args.time_factor)
    if args.profile:
        run_snakemake(bundle, args.profile, out, _snakefile(bundle, args.snakefile),
                      points if args.points is not None else None)
        new_base = out / "work" / "results" / doc.study
    else:
        data = _data_dir(bundle, args.data)
        for p in points:
            rc = run_point(bundle, p, data, out, args.launcher)
            if rc:
                print(f"benscale reproduce: {p.name} exited {rc}, see {out / p.log}",
                      file=sys.stderr)
        new_base = out
    replace(doc, points=points, reproduced_from=str(bundle.base)).write(out / STUDY_JSON)
    rows = [row for p in points for row in compare_run(
        p.name, bundle.base / p.run_dir, new_base / p.run_dir, tol)]
    df = pd.DataFrame(rows)
    write_text(out / "comparison.csv", df.to_csv(index=False))
    write_text(out / "comparison.md", markdown(df, f"Reproduction of study {doc.study}"))
    bad = int((~df["agree"]).sum()) if not df.empty else 0
    print(f"benscale reproduce: {len(df)} values compared, {bad} disagree: "
          f"{out / 'comparison.md'}", file=sys.stderr)
    return 1 if bad else 0
