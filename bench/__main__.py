"""``python -m bench all|NAME [--quick]``: run the benchmarks, write JSON and the docs table.

Examples:
    python -m bench all                     # every benchmark, main_job last (~15 min)
    python -m bench all --skip main_job     # everything but the expensive `make demo`
    python -m bench extract --quick         # one benchmark at smoke sizes (seconds)
    python -m bench gpu                     # the GPU acceptance run (not part of `all`)

Writes ``results/bench/<date>-<host>.json`` (``-quick`` suffix in smoke mode) and, for
full runs, replaces the benchmark's generated section in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench.common import (
    CACHE_DIR,
    DOCS_PATH,
    RESULTS_DIR,
    Context,
    UnavailableError,
    benchmark_record,
    run_record,
    save_results,
    update_docs,
)

#: Benchmarks in the order ``all`` runs them; main_job (minutes) last.
BENCHMARKS: tuple[str, ...] = ("index_build", "extract", "stream_extract", "loader", "train_step",
                                "main_job")
#: Benchmarks that need hardware this machine may lack; never part of ``all``.
HARDWARE_BENCHMARKS: tuple[str, ...] = ("gpu",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=("all", *BENCHMARKS, *HARDWARE_BENCHMARKS),
                        help="benchmark to run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: tiny sizes, 2 repeats, whole suite < 60 s")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="gpu benchmark: cuda (default), or cpu to smoke-test its plumbing "
                             "(its figures are then no GPU measurement and go to no docs)")
    parser.add_argument("--skip", action="append", default=[], choices=BENCHMARKS,
                        help="leave a benchmark out of `all` (repeatable)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per figure (default 5, quick 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder of the JSON results (default results/bench)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="markdown file to update (default docs/benchmarks.md for full "
                             "runs, none for --quick)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for generated inputs, reused across runs "
                             "(default results/bench/cache[/quick])")
    return parser.parse_args(argv)


def load(name: str) -> ModuleType:
    """The benchmark module ``bench.<name>``."""
    return importlib.import_module(f"bench.{name}")


def run_one(name: str, ctx: Context) -> dict:
    """Run one benchmark; a failure is recorded, not raised, so the others still run."""
    started = time.perf_counter()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        figures, details = load(name).run(ctx)
        # A benchmark that measures what it could and names what failed (bench gpu).
        failed = details.get("errors") or {}
        status = "partial" if failed else "ok"
        error = "; ".join(f"{key}: {msg}" for key, msg in failed.items()) or None
    except UnavailableError as exc:
        figures, details, status, error = [], {}, "unavailable", str(exc)
    except Exception as exc:
        traceback.print_exc()
        figures, details, status, error = [], {}, "error", f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    print(f"[bench] {name}: {status} in {elapsed:.1f} s" + (f": {error}" if error else ""),
          file=sys.stderr, flush=True)
    for f in figures:
        print(f"[bench]   {f.key}: ratio {f.ratio.median:.3g} "
              f"[{f.ratio.min:.3g}, {f.ratio.max:.3g}] ({f.candidate.median:.4g} vs "
              f"{f.baseline.median:.4g} {f.candidate.unit})", file=sys.stderr, flush=True)
    return benchmark_record(status, elapsed, figures, details, error)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; exit 1 if any of them failed."""
    args = parse_args(argv)
    names = [n for n in BENCHMARKS if n not in args.skip] if args.name == "all" else [args.name]
    work = args.work or (CACHE_DIR / "quick" if args.quick else CACHE_DIR)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=args.quick, repeats=args.repeats or (2 if args.quick else 5),
                  work=work.resolve(), warmup=0 if args.quick else 1, device=args.device,
                  out_dir=args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    record = run_record(args.quick)
    record["repeats"] = ctx.repeats
    for name in names:
        record["benchmarks"][name] = run_one(name, ctx)
        # Saved after each benchmark: a crash later keeps what was measured.
        path = save_results(args.out, record, None if args.name == "all" else args.name,
                            hardware=args.name in HARDWARE_BENCHMARKS)
    smoke = args.name in HARDWARE_BENCHMARKS and args.device == "cpu"
    docs = args.docs or (None if args.quick or smoke else DOCS_PATH)
    measured = {n: b for n, b in record["benchmarks"].items() if b["status"] != "unavailable"}
    if docs is not None and measured:
        # A machine without the hardware leaves that benchmark's recorded figures alone.
        update_docs(docs, {**record, "benchmarks": measured})
    print(f"[bench] results: {path}" + (f", table: {docs}" if docs and measured else ""),
          file=sys.stderr)
    return 0 if all(b["status"] == "ok" for b in record["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
