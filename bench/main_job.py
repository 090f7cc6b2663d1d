"""The main job: wall time of the README's ``make demo`` and where it goes, per rule.

``make demo`` is ``snakemake --profile profiles/local --cores 2`` in the checkout. To time a
COMPLETE run without touching the user's results/, the same command runs with
``--directory`` pointing at an empty folder (the Snakefile resolves its defaults relative
to itself), so every rule runs: synth, ingest, extract, every training point, study,
report. Per-rule times come from the Snakemake ``benchmark:`` files the rules write (any
TSV whose header is Snakemake's ``s  h:m:s  max_rss ...``), so nothing is inferred from logs.

The figure's baseline is the README's budget, 10 minutes on 2 cores: ratio = budget / wall
(>= 1 meets it). A second figure compares the sum of the rules' own times with the wall
time (what Snakemake's scheduling and start-up add).

``--quick`` runs only the data stages of the same DAG (target: the shards' manifest) with
a 24-patch synthetic archive, to smoke-test the harness in seconds.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchFigure, Context, Stat

NAME = "main_job"
KEYS = ("demo_wall_vs_budget", "demo_rules_vs_wall")
BUDGET_S = 600.0
CORES = 2


def snakemake_command(workdir: Path, quick: bool) -> list[str]:
    """``make demo``'s command, run in ``workdir`` (quick: data stages, tiny archive)."""
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "snakemake"), "-s", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / "local"), "--cores", str(CORES), "--directory", str(workdir)]
    if quick:
        overrides = workdir / "quick-config.yaml"
        overrides.parent.mkdir(parents=True, exist_ok=True)
        overrides.write_text("data:\n  synth:\n    patches: 24\n  extract:\n"
                             "    shard_size: 8\n")
        cmd += ["--configfile", str(REPO / "config" / "config.yaml"), str(overrides),
                "--", "results/data/shards/manifest.json"]
    return cmd


def rule_benchmarks(workdir: Path) -> list[dict[str, Any]]:
    """Every Snakemake benchmark file under ``workdir``: rule job, seconds, max RSS."""
    rows = []
    for path in sorted(workdir.rglob("*")):
        if not path.is_file() or path.suffix not in (".tsv", ".txt", ".bench"):
            continue
        with path.open() as fh:
            head = fh.readline()
            if not head.startswith("s\th:m:s"):
                continue
            fh.seek(0)
            for rec in csv.DictReader(fh, delimiter="\t"):
                rows.append({"file": str(path.relative_to(workdir)), "s": float(rec["s"]),
                             "max_rss_mb": _num(rec.get("max_rss")),
                             "cpu_time_s": _num(rec.get("cpu_time"))})
    return rows


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "-", "NA") else None
    except ValueError:
        return None


def run(ctx: Context) -> tuple[list[BenchFigure], dict[str, Any]]:
    """Run the main job ``repeats`` times (once in full mode: it takes minutes)."""
    repeats = 1
    walls, rule_sums, runs = [], [], []
    for r in range(repeats):
        workdir = ctx.work / f"main-job-{r}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        cmd = snakemake_command(workdir, ctx.quick)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - start
        (ctx.work / f"main-job-{r}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; log: "
                               f"{ctx.work / f'main-job-{r}.log'}: {proc.stderr[-1500:]}")
        rules = rule_benchmarks(workdir)
        walls.append(wall)
        rule_sums.append(sum(x["s"] for x in rules) or float("nan"))
        runs.append({"wall_s": wall, "rules": rules})
    figures = [
        BenchFigure(key="demo_wall_vs_budget",
               title=("data stages of the DAG (quick)" if ctx.quick else "`make demo`")
               + f" wall time vs the {BUDGET_S / 60:.0f}-min budget",
               candidate=Stat.of(walls, "s"), baseline_name="budget",
               baseline=Stat.of([BUDGET_S] * repeats, "s"),
               ratio=Stat.of([BUDGET_S / w for w in walls], "x"),
               goal=None if ctx.quick else 1.0,
               note="ratio = budget / wall; >= 1 meets the goal"),
    ]
    if all(s == s for s in rule_sums):  # benchmark files present (not NaN)
        figures.append(BenchFigure(
            key="demo_rules_vs_wall", title="sum of per-rule times vs wall time",
            candidate=Stat.of(rule_sums, "s"), baseline_name="wall", baseline=Stat.of(walls, "s"),
            ratio=Stat.of([s / w for s, w in zip(rule_sums, walls, strict=True)], "x"),
            note="< 1: time outside rules (Snakemake start-up, DAG, scheduling); rules run "
                 "one after another on 2 cores"))
    details = {"command": " ".join(cmd).replace(str(workdir), "WORKDIR"),
               "runs": runs, "per_rule_s": _per_rule(runs[-1]["rules"]),
               "notes": ["Rule times from the rules' Snakemake benchmark files."
                         if rule_sums and rule_sums[-1] == rule_sums[-1] else
                         "No Snakemake benchmark files found: the rules declare no "
                         "`benchmark:` yet, so there is no per-rule split."]}
    return figures, details


def _per_rule(rules: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per benchmark file, largest first."""
    return dict(sorted(((r["file"], r["s"]) for r in rules), key=lambda kv: -kv[1]))
