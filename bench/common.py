"""The measuring harness shared by every benchmark: timing, statistics, records, output.

Rules every benchmark follows (they are what make a figure worth reading on a noisy,
shared machine):

* a figure is a RATIO against a baseline measured in the SAME run, on the same data;
* the candidate and its baseline are measured in alternating order (A B B A ...) so that
  drifting load on the machine hits both alike, and the ratio is taken per repeat;
* warm-up runs are excluded; every figure keeps its raw samples, the median, and the
  spread (min and max; ``spread_pct`` = (max - min) / median);
* every number carries its unit in its name or its ``unit`` field.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benscale.atomic import write_json, write_text
from benscale.provenance import git_commit, machine, package_versions
from benscale.typed import to_mapping

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENSCALE_SHARED", REPO.parent / "shared"))

#: Default output folder of the JSON records, and the document holding the tables.
RESULTS_DIR = REPO / "results" / "bench"
DOCS_PATH = REPO / "docs" / "benchmarks.md"
#: Inputs generated once and reused by later runs (git-ignored, like all of results/).
CACHE_DIR = RESULTS_DIR / "cache"

#: Packages whose versions decide the figures, in addition to provenance's list.
BENCH_PACKAGES: tuple[str, ...] = ("torchgeo", "h5py", "GDAL")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m benscale.cli`` child: this checkout's src/ first on
    PYTHONPATH, the caller's path after it (packages installed beside the interpreter, as
    on a GPU node with its own PyTorch, stay importable), plus ``extra``."""
    path = os.pathsep.join(filter(None, (str(REPO / "src"), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": path, **extra}


class UnavailableError(RuntimeError):
    """A benchmark cannot run here (a part of benscale it measures, or a GPU, is missing)."""


@dataclass(frozen=True)
class Context:
    """What a benchmark run was asked to do, shared by every benchmark module."""

    quick: bool
    repeats: int
    work: Path
    warmup: int
    #: ``cuda`` for the GPU run; ``cpu`` smoke-tests it (never a GPU measurement).
    device: str = "cuda"
    #: Where results (and the GPU run's system file) go.
    out_dir: Path = Path("results/bench")

    def size(self, quick: int, full: int) -> int:
        """A problem size: tiny in --quick smoke mode, realistic otherwise."""
        return quick if self.quick else full


@dataclass
class Stat:
    """Summary of repeated measurements of one quantity."""

    unit: str
    median: float
    min: float
    max: float
    spread_pct: float
    n: int
    samples: list[float]

    @classmethod
    def of(cls, samples: list[float], unit: str) -> Stat:
        """Median, extremes and relative spread of ``samples``."""
        if not samples:
            raise ValueError("no samples")
        med = statistics.median(samples)
        if med:
            spread = 100.0 * (max(samples) - min(samples)) / med
        else:  # all zero (e.g. no overlap at all) has no spread
            spread = 0.0 if max(samples) == min(samples) else math.inf
        return cls(unit=unit, median=med, min=min(samples), max=max(samples),
                   spread_pct=round(spread, 2), n=len(samples),
                   samples=[_round(s) for s in samples])


@dataclass
class BenchFigure:
    """One headline figure: candidate vs baseline, both measured in this run.

    ``ratio`` is oriented so that higher is better for the candidate (throughput ratio, or
    baseline time / candidate time), and it is the median of the per-repeat ratios.
    """

    key: str
    title: str
    candidate: Stat
    baseline_name: str
    baseline: Stat
    ratio: Stat
    goal: float | None = None
    note: str = ""
    goal_met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        """Decide ``goal_met`` from the median ratio."""
        if self.goal is not None:
            self.goal_met = self.ratio.median >= self.goal


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call of ``fn``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class TimedWorkload:
    """One unit of timed work: ``run()`` returns the number of items it processed.

    ``setup()`` runs before every ``run()`` and is not timed (e.g. removing the previous
    output so that a restartable command really redoes its work).
    """

    run: Callable[[], float]
    setup: Callable[[], Any] | None = None

    def rate(self) -> float:
        """Items per second of one timed run."""
        if self.setup is not None:
            self.setup()
        seconds, items = timed(self.run)
        return items / seconds


def _workload(w: TimedWorkload | Callable[[], float]) -> TimedWorkload:
    return w if isinstance(w, TimedWorkload) else TimedWorkload(w)


def paired(candidate: TimedWorkload | Callable[[], float],
           baseline: TimedWorkload | Callable[[], float],
           repeats: int, warmup: int = 1) -> tuple[list[float], list[float], list[float]]:
    """Run two workloads alternately; return (candidate rates, baseline rates, ratios).

    Each workload does one unit of work and returns how many items it processed; the rate
    is items per second of wall time. Order alternates A B, B A, A B ... so that a load
    change on the machine is shared; ``warmup`` rounds of each are run first and dropped.
    """
    cand_w, base_w = _workload(candidate), _workload(baseline)
    for _ in range(warmup):
        cand_w.rate()
        base_w.rate()
    cand, base, ratios = [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            c, b = cand_w.rate(), base_w.rate()
        else:
            b, c = base_w.rate(), cand_w.rate()
        cand.append(c)
        base.append(b)
        ratios.append(c / b)
    return cand, base, ratios


def measure_group(workloads: dict[str, TimedWorkload | Callable[[], float]], repeats: int,
                  warmup: int = 1) -> dict[str, list[float]]:
    """Rates (items/s) of several workloads, measured in rotating order within each repeat.

    Like :func:`paired` for more than two: each repeat runs every workload once, starting
    one further along the list each time, so ratios between any two of them can be taken
    per repeat (:func:`rate_figure`) and load drift hits all alike.
    """
    items = [(name, _workload(w)) for name, w in workloads.items()]
    for _ in range(warmup):
        for _name, w in items:
            w.rate()
    rates: dict[str, list[float]] = {name: [] for name, _ in items}
    for r in range(repeats):
        k = r % len(items)
        for name, w in items[k:] + items[:k]:
            rates[name].append(w.rate())
    return rates


def paired_figure(key: str, title: str, candidate: TimedWorkload | Callable[[], float],
                  baseline: TimedWorkload | Callable[[], float], baseline_name: str, unit: str,
                  ctx: Context, goal: float | None = None, note: str = "",
                  warmup: int | None = None) -> BenchFigure:
    """Measure ``candidate`` against ``baseline`` with :func:`paired`; build the figure."""
    cand, base, ratios = paired(candidate, baseline, ctx.repeats,
                                ctx.warmup if warmup is None else warmup)
    return BenchFigure(key=key, title=title, candidate=Stat.of(cand, unit),
                  baseline_name=baseline_name, baseline=Stat.of(base, unit),
                  ratio=Stat.of(ratios, "x"), goal=goal, note=note)


def rate_figure(key: str, title: str, cand: list[float], base: list[float],
                baseline_name: str, unit: str, goal: float | None = None,
                note: str = "") -> BenchFigure:
    """A figure from per-repeat rates measured elsewhere (same repeat -> same ratio)."""
    ratios = [c / b for c, b in zip(cand, base, strict=True)]
    return BenchFigure(key=key, title=title, candidate=Stat.of(cand, unit),
                  baseline_name=baseline_name, baseline=Stat.of(base, unit),
                  ratio=Stat.of(ratios, "x"), goal=goal, note=note)


def run_record(quick: bool) -> dict[str, Any]:
    """The header of a results file: where, when, on what, and how loaded the machine was."""
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": to_mapping(machine()),
        "load_avg_1_5_15_at_start": list(os.getloadavg()),
        "git": to_mapping(git_commit(REPO)),
        "packages": package_versions(tuple(dict.fromkeys(
            ("benscale", "torch", "torchvision", "deepspeed", "numpy", "netCDF4", "rasterio",
             "xarray", "pandas", "pyarrow", "snakemake", *BENCH_PACKAGES)))),
        "benchmarks": {},
    }


def benchmark_record(status: str, elapsed_s: float, figures: list[BenchFigure],
                     details: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    """One benchmark's entry in the results file."""
    return {
        "status": status,
        "elapsed_s": round(elapsed_s, 2),
        "load_avg_1_at_end": os.getloadavg()[0],
        "figures": {f.key: asdict(f) for f in figures},
        "details": details,
        **({"error": error} if error else {}),
    }


def results_path(out_dir: Path, record: dict[str, Any], only: str | None = None,
                 hardware: bool = False) -> Path:
    """``<out>/<date>-<host>[-<benchmark>][-quick].json``: a run of ``all`` owns the plain
    name; a run of one benchmark gets its own file, so it never overwrites the others. A
    hardware benchmark's file leads with its name (``gpu-<date>-<host>.json``): its runs
    come from other machines and are looked up by what they measured."""
    date = record["date_utc"][:10]
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    quick = "-quick" if record["quick"] else ""
    if hardware and only:
        return out_dir / f"{only}-{date}-{host}{quick}.json"
    return out_dir / f"{date}-{host}{f'-{only}' if only else ''}{quick}.json"


def save_results(out_dir: Path, record: dict[str, Any], only: str | None = None,
                 hardware: bool = False) -> Path:
    """Write the run's JSON atomically; returns its path."""
    path = results_path(out_dir, record, only, hardware)
    write_json(path, record)
    return path


# ---------------------------------------------------------------------------- markdown


def fmt(x: float | None) -> str:
    """A number with 3 significant digits (no scientific notation for usual sizes)."""
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def figure_rows(figures: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown table rows, one per figure."""
    rows = []
    for fig in figures.values():
        c, b, r = fig["candidate"], fig["baseline"], fig["ratio"]
        goal = "-" if fig["goal"] is None else f">= {fig['goal']:g}"
        met = {True: "yes", False: "**no**", None: "-"}[fig["goal_met"]]
        rows.append(
            f"| {fig['title']} | {fmt(c['median'])} {c['unit']} (±{c['spread_pct']:.0f} %) "
            f"| {fig['baseline_name']}: {fmt(b['median'])} {b['unit']} "
            f"(±{b['spread_pct']:.0f} %) | **{r['median']:.3g}** "
            f"[{r['min']:.3g}, {r['max']:.3g}] | {goal} | {met} |")
    return rows


def section_markdown(name: str, bench: dict[str, Any], record: dict[str, Any]) -> str:
    """The generated table of one benchmark, with its machine, date and load."""
    m = record["machine"]
    head = (f"_Run {record['date_utc']} on `{m['hostname']}` ({m['cpu_model']}, "
            f"{m['cpu_count']} cores, {m['memory_gib']} GiB, GPUs: "
            f"{', '.join(m['gpus']) or 'none'}); commit "
            f"{(record['git'].get('commit') or '?')[:10]}"
            f"{' (dirty)' if record['git'].get('dirty') else ''}; load average "
            f"{record['load_avg_1_5_15_at_start'][0]:.2f} at start, "
            f"{bench.get('load_avg_1_at_end', 0):.2f} at end; "
            f"{'QUICK smoke sizes; ' if record['quick'] else ''}"
            f"{bench['status']} in {bench['elapsed_s']:.0f} s._")
    lines = [head, ""]
    if bench["figures"]:
        lines += ["| figure | benscale (median, spread) | baseline (median, spread) "
                  "| ratio [min, max] | goal | met |", "|---|---|---|---|---|---|"]
        lines += figure_rows(bench["figures"])
    if bench.get("error"):
        lines += ["", f"Error: `{bench['error']}`"]
    notes = [f"- {f['title']}: {f['note']}" for f in bench["figures"].values() if f["note"]]
    notes += [f"- {n}" for n in bench["details"].get("notes", [])]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def update_docs(path: Path, record: dict[str, Any]) -> None:
    """Replace the generated section of each benchmark that ran; keep the prose around it.

    Sections live between ``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->``;
    a benchmark whose markers are missing gets a new section at the end.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for name, bench in record["benchmarks"].items():
        begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
        body = f"{begin}\n{section_markdown(name, bench, record)}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, body=body: body, text)
        else:
            text = text.rstrip("\n") + f"\n\n## {name}\n\n{body}\n"
    write_text(path, text)


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def profile_top(fn: Callable[[], Any], limit: int = 12) -> list[dict[str, Any]]:
    """CProfile ``fn`` once; the ``limit`` functions with the most cumulative time.

    Used where a goal is missed, to say where the time goes (docs/benchmarks.md).
    """
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(stats.total_tt, 1e-12)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": ncalls,
                     "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4),
                     "tottime_pct": round(100 * tottime / total, 1)})
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:limit]
