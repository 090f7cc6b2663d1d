"""The report's tables: tidy epochs, one row per run, and the scaling table.

Definitions (docs/report.md):

- *steady epochs*: all epochs but the first (warm-up: JIT compilation, page cache, allocator)
  when a run has more than one; else its only epoch (flagged ``warmup_included``).
- per run, ``epoch_time_s`` is the median over its steady epochs of ``epoch_time_s`` (the
  max over ranks, what the job waits for); ``samples_per_s`` likewise.
- strong scaling: ``speedup = T0 / T``, ``efficiency = T0 * W0 / (W * T)``, with ``T0`` the
  median epoch time over the repeats at the smallest world size ``W0`` of the mode;
- weak scaling: ``speedup = X / X0`` (throughput ratio), ``efficiency = X * W0 / (X0 * W)``.
- Spread over repeats: speedup and efficiency are computed per run against the median
  baseline, then summarised as median, min and max at each world size.
- Every scaling figure of a variant is against that variant's own smallest scale; the
  best-by-scale table compares the variants against ONE baseline, the fastest variant at the
  smallest scale (:func:`best_by_scale`).
- communication share: ``comm_time_s / epoch_time_s``. ``comm_time_s`` is the wall time of
  the gradient reductions, including any part that ran behind backward, so the share may
  exceed what the job waits for; the *exposed* share takes out the part measured as hidden
  (the excess of data + compute + comm + optimizer over the epoch time).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from benscale.files.run import PARTS, read_event_log, time_to_train_s
from benscale.report.load import PointResult, StudyResults

#: Metrics of run.json's ``test`` block copied to runs.csv as test_<name>.
TEST_METRICS: tuple[str, ...] = ("map_macro", "map_micro", "f1_macro", "f1_micro")
#: Validation metrics reported at the final epoch.
FINAL_METRICS: tuple[str, ...] = ("val_map_macro", "val_map_micro", "val_f1_macro",
                                  "val_f1_micro", "val_loss", "train_loss")
#: Validation metrics also reported at their best epoch (higher is better), as best_<name>.
BEST_METRICS: tuple[str, ...] = ("val_map_macro", "val_map_micro", "val_f1_macro",
                                 "val_f1_micro")


#: Provenance columns of a run in the tables (None where the run left no record).
PROVENANCE_COLUMNS: tuple[str, ...] = ("git_commit", "git_dirty", "config_hash", "date_utc",
                                       "hosts", "launcher", "backend", "slurm_job_id")


def provenance_columns(rec: PointResult) -> dict[str, Any]:
    """The provenance of a run as flat columns (git, config hash, hosts, Slurm, date)."""
    record = rec.record
    if record is None:
        return dict.fromkeys(PROVENANCE_COLUMNS)
    prov = record.provenance
    return {
        "git_commit": prov.git.commit,
        "git_dirty": prov.git.dirty,
        "config_hash": prov.config_hash,
        "date_utc": prov.date_utc,
        "hosts": ",".join(record.world.hosts),
        "launcher": record.world.launcher,
        "backend": record.world.backend,
        "slurm_job_id": prov.slurm_job_id,
    }


def point_columns(rec: PointResult) -> dict[str, Any]:
    """The scaling point of a run (from study.json)."""
    p = rec.point
    return {"point": p.name, "variant": p.variant, "mode": p.mode, "repeat": p.repeat,
            "nodes": p.nodes,
            "gpus_per_node": p.gpus_per_node, "world_size": p.world_size,
            "global_batch": p.global_batch, "batch_per_gpu": p.batch_per_gpu}


def epochs_table(study: StudyResults) -> pd.DataFrame:
    """Every epoch of every run with an epochs.csv: one row per run x epoch (tidy)."""
    frames = []
    for rec in study.runs:
        if rec.epochs.empty:
            continue
        df = rec.epochs.copy()
        # the run's own world_size/nodes/global_batch columns win over the plan's
        extra = {k: v for k, v in point_columns(rec).items() if k not in df.columns}
        for key, value in {**extra, "status": rec.status, **provenance_columns(rec)}.items():
            df[key] = value
        df["warmup"] = df["epoch"] == df["epoch"].min()
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["point", "epoch"])
    out = pd.concat(frames, ignore_index=True)
    first = ["point", "variant", "mode", "repeat", "nodes", "gpus_per_node", "world_size",
             "epoch"]
    return out[[c for c in first if c in out] + [c for c in out if c not in first]]


def steady(epochs: pd.DataFrame) -> pd.DataFrame:
    """The steady-state epochs of one run (all but the first, unless it is the only one)."""
    if len(epochs) <= 1:
        return epochs
    return epochs[epochs["epoch"] != epochs["epoch"].min()]


def _median(df: pd.DataFrame, col: str) -> float:
    return float(df[col].median()) if col in df and df[col].notna().any() else math.nan


def time_to_target(epochs: pd.DataFrame, target: float | None) -> float:
    """Training time (sum of epoch_time_s, evaluation excluded) until val_map_macro first
    reaches ``target``; NaN when it never does."""
    if target is None or epochs.empty or "val_map_macro" not in epochs:
        return math.nan
    ordered = epochs.sort_values("epoch")
    reached = ordered["val_map_macro"] >= target
    if not reached.any():
        return math.nan
    upto = ordered.loc[: reached.idxmax()]
    return float(upto["epoch_time_s"].sum())


def run_row(rec: PointResult, target: float | None) -> dict[str, Any]:
    """One row of runs.csv."""
    settings = rec.record.settings if rec.record else None
    row: dict[str, Any] = {**point_columns(rec), "status": rec.status, "reason": rec.reason,
                           "engine": settings.engine if settings else None,
                           "engine_version": rec.record.engine.version if rec.record else None,
                           "precision": settings.precision if settings else None,
                           "zero_stage": settings.zero_stage if settings else None,
                           "epochs": len(rec.epochs)}
    ep = rec.epochs
    if not ep.empty:
        for key in ("world_size", "nodes", "global_batch"):
            if key in ep:
                row[key] = int(ep[key].iloc[0])
        st = steady(ep)
        row.update({
            "warmup_included": len(ep) <= 1,
            "first_epoch_time_s": float(ep.sort_values("epoch")["epoch_time_s"].iloc[0]),
            "epoch_time_s_mean": float(st["epoch_time_s"].mean()),
            "epoch_time_s_median": _median(st, "epoch_time_s"),
            "samples_per_s": _median(st, "samples_per_s"),
            "steps_per_epoch": _median(st, "steps"),
        })
        for part in PARTS:
            col = f"{part}_mean" if f"{part}_mean" in st else part
            row[part] = _median(st, col)
        row.update(comm_shares(row))
        for m in BEST_METRICS:
            if m in ep and ep[m].notna().any():
                row[f"best_{m}"] = float(ep[m].max())
        if "val_map_macro" in ep and ep["val_map_macro"].notna().any():
            row["best_epoch"] = int(ep.loc[ep["val_map_macro"].idxmax(), "epoch"])
        last = ep.sort_values("epoch").iloc[-1]
        for m in FINAL_METRICS:
            if m in ep:
                row[f"final_{m}"] = float(last[m])
        row["time_to_target_s"] = time_to_target(ep, target)
        row["target_map_macro"] = target
    test = rec.record.test if rec.record else None
    for m in TEST_METRICS:
        row[f"test_{m}"] = getattr(test, m) if test else None
    row["test_checkpoint"] = test.checkpoint if test else None  # which weights they are of
    row["time_to_train_s"] = time_to_train_s(read_event_log(rec.run_dir))
    row.update(provenance_columns(rec))
    row["run_dir"] = str(rec.run_dir)
    row["log"] = str(rec.log_path) if rec.log_path else None
    return row


def comm_shares(row: dict[str, Any]) -> dict[str, float]:
    """The communication share of a run's epoch time, all of it and the exposed part."""
    epoch = row.get("epoch_time_s_median", math.nan)
    comm = row.get("comm_time_s", math.nan)
    if not epoch or math.isnan(epoch) or math.isnan(comm):
        return {"comm_share": math.nan, "exposed_comm_share": math.nan}
    total = sum(0.0 if math.isnan(row.get(p, math.nan)) else row[p] for p in PARTS)
    hidden = min(max(total - epoch, 0.0), comm)
    return {"comm_share": comm / epoch, "exposed_comm_share": (comm - hidden) / epoch}


def default_target(study: StudyResults) -> float | None:
    """The target macro mAP when none is given: 90 % of the lowest best val_map_macro over
    the completed runs, so every run reaches it and the times compare like for like."""
    cfg_target = study.doc.config.report.target_map_macro
    if cfg_target is not None:
        return float(cfg_target)
    bests = [r.epochs["val_map_macro"].max() for r in study.runs
             if r.ok and "val_map_macro" in r.epochs and r.epochs["val_map_macro"].notna().any()]
    return round(0.9 * float(min(bests)), 4) if bests else None


def runs_table(study: StudyResults, target: float | None) -> pd.DataFrame:
    """runs.csv: one row per point, failed ones included with their reason."""
    return pd.DataFrame([run_row(rec, target) for rec in study.runs])


def _spread(values: pd.Series, name: str) -> dict[str, float]:
    return {f"{name}_median": float(values.median()), f"{name}_min": float(values.min()),
            f"{name}_max": float(values.max())}


def scaling_table(runs: pd.DataFrame) -> pd.DataFrame:
    """scaling.csv: per variant, mode and world size, speedup and efficiency over the
    variant's smallest scale."""
    ok = runs[(runs["status"] == "ok")] if "status" in runs else runs.iloc[0:0]
    if ok.empty or "epoch_time_s_median" not in ok:
        return pd.DataFrame(columns=["variant", "mode", "world_size", "speedup_median",
                                     "efficiency_median"])
    rows = []
    for (variant, mode), group in ok.groupby(["variant", "mode"], sort=False):
        w0 = int(group["world_size"].min())
        base = group[group["world_size"] == w0]
        t0 = float(base["epoch_time_s_median"].median())
        x0 = float(base["samples_per_s"].median())
        acc0 = (base["test_map_macro"].astype(float).median() if "test_map_macro" in base
                else math.nan)
        for world, g in group.groupby("world_size", sort=True):
            w = int(world)
            t = g["epoch_time_s_median"].astype(float)
            x = g["samples_per_s"].astype(float)
            if mode == "weak":
                speedup = x / x0
                efficiency = x * w0 / (x0 * w)
            else:
                speedup = t0 / t
                efficiency = t0 * w0 / (w * t)
            acc = (g["test_map_macro"].astype(float) if "test_map_macro" in g
                   else pd.Series([math.nan]))
            rows.append({
                "variant": variant, "mode": mode, "world_size": w,
                "nodes": int(g["nodes"].iloc[0]),
                "gpus_per_node": int(g["gpus_per_node"].iloc[0]), "runs": len(g),
                "baseline_world_size": w0, "ideal_speedup": w / w0,
                **_spread(t, "epoch_time_s"), **_spread(x, "samples_per_s"),
                **_spread(speedup, "speedup"), **_spread(efficiency, "efficiency"),
                "test_map_macro_median": float(acc.median()),
                "test_map_macro_change": float(acc.median() - acc0),
                "time_to_target_s_median": _median(g, "time_to_target_s"),
                "final_val_map_macro_median": _median(g, "final_val_map_macro"),
                "comm_share_median": _median(g, "comm_share"),
                "exposed_comm_share_median": _median(g, "exposed_comm_share"),
            })
    return pd.DataFrame(rows)


def _completed(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs with a measured epoch time."""
    if "status" not in runs or "epoch_time_s_median" not in runs:
        return runs.iloc[0:0]
    return runs[runs["status"] == "ok"].dropna(subset=["epoch_time_s_median"])


def variant_order(runs: pd.DataFrame) -> list[str]:
    """The variants in plan order (their first appearance in runs.csv)."""
    return list(dict.fromkeys(runs["variant"].dropna())) if "variant" in runs else []


#: Columns of best_by_scale.csv, in order.
BEST_COLUMNS: tuple[str, ...] = (
    "mode", "world_size", "nodes", "best_variant", "epoch_time_s", "samples_per_s",
    "baseline_variant", "baseline_world_size", "speedup", "efficiency", "comm_share",
    "exposed_comm_share", "final_val_map_macro", "test_map_macro", "time_to_target_s",
    "runner_up", "runner_up_ratio", "variants_compared")


def best_by_scale(runs: pd.DataFrame) -> pd.DataFrame:
    """best_by_scale.csv: per mode and world size, the fastest variant (lowest median epoch
    time over its repeats), with speedup and efficiency against ONE baseline: the fastest
    variant at the mode's smallest scale. At a given mode and world size every variant runs
    the same batches over the same samples, so the epoch times compare directly.
    """
    ok = _completed(runs)
    if ok.empty:
        return pd.DataFrame(columns=list(BEST_COLUMNS))
    order = {v: i for i, v in enumerate(variant_order(ok))}
    rows = []
    for mode, group in ok.groupby("mode", sort=False):
        per = (group.groupby(["world_size", "variant"])
               .agg(epoch_time_s=("epoch_time_s_median", "median"),
                    samples_per_s=("samples_per_s", "median"), nodes=("nodes", "first"))
               .reset_index())
        per["order"] = per["variant"].map(order)
        per = per.sort_values(["world_size", "epoch_time_s", "order"])
        w0 = int(per["world_size"].min())
        base = per[per["world_size"] == w0].iloc[0]
        for world, at in per.groupby("world_size", sort=True):
            best = at.iloc[0]
            w = int(world)
            mine = group[(group["world_size"] == w) & (group["variant"] == best["variant"])]
            if mode == "weak":
                speedup = float(best["samples_per_s"]) / float(base["samples_per_s"])
            else:
                speedup = float(base["epoch_time_s"]) / float(best["epoch_time_s"])
            rows.append({
                "mode": mode, "world_size": w, "nodes": int(best["nodes"]),
                "best_variant": best["variant"], "epoch_time_s": float(best["epoch_time_s"]),
                "samples_per_s": float(best["samples_per_s"]),
                "baseline_variant": base["variant"], "baseline_world_size": w0,
                "speedup": speedup, "efficiency": speedup * w0 / w,
                "comm_share": _median(mine, "comm_share"),
                "exposed_comm_share": _median(mine, "exposed_comm_share"),
                "final_val_map_macro": _median(mine, "final_val_map_macro"),
                "test_map_macro": _median(mine, "test_map_macro"),
                "time_to_target_s": _median(mine, "time_to_target_s"),
                "runner_up": at.iloc[1]["variant"] if len(at) > 1 else None,
                "runner_up_ratio": float(at.iloc[1]["epoch_time_s"] / best["epoch_time_s"])
                if len(at) > 1 else math.nan,
                "variants_compared": len(at),
            })
    return pd.DataFrame(rows, columns=list(BEST_COLUMNS))


#: Columns of headline.csv, in order.
HEADLINE_COLUMNS: tuple[str, ...] = (
    "variant", "mode", "largest_world_size", "epoch_time_s", "speedup", "efficiency",
    "vs_fastest", "time_to_target_s", "final_val_map_macro", "points", "failed")


def _at(row: pd.Series, col: str) -> float:
    """A number of a row; NaN where the column is absent (a report of an older benscale)."""
    return float(row[col]) if col in row and row[col] is not None else math.nan


def headline(runs: pd.DataFrame, scaling: pd.DataFrame) -> pd.DataFrame:
    """headline.csv: per variant and mode, what its largest measured scale gives: epoch time,
    speedup and efficiency over the variant's own smallest scale, its epoch time relative to
    the fastest variant there, time to the target accuracy and the final validation mAP."""
    if scaling.empty or "variant" not in runs:
        return pd.DataFrame(columns=list(HEADLINE_COLUMNS))
    rows = []
    for (variant, mode), sc in scaling.groupby(["variant", "mode"], sort=False):
        top = sc.sort_values("world_size").iloc[-1]
        w = int(top["world_size"])
        peers = scaling[(scaling["mode"] == mode) & (scaling["world_size"] == w)]
        mine = runs[(runs["variant"] == variant) & (runs["mode"] == mode)]
        rows.append({
            "variant": variant, "mode": mode, "largest_world_size": w,
            "epoch_time_s": _at(top, "epoch_time_s_median"),
            "speedup": _at(top, "speedup_median"),
            "efficiency": _at(top, "efficiency_median"),
            "vs_fastest": _at(top, "epoch_time_s_median")
            / float(peers["epoch_time_s_median"].min()),
            "time_to_target_s": _at(top, "time_to_target_s_median"),
            "final_val_map_macro": _at(top, "final_val_map_macro_median"),
            "points": len(mine), "failed": int((mine["status"] != "ok").sum()),
        })
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def variants_table(study: StudyResults) -> pd.DataFrame:
    """What each variant is, as its completed runs recorded it (engine and version,
    precision, ZeRO stage, how communication was timed), with its points' outcome."""
    rows = []
    planned = [v.name for v in study.doc.variants] or \
        list(dict.fromkeys(r.point.variant for r in study.runs))
    for name in planned:
        recs = [r for r in study.runs if r.point.variant == name]
        record = next((r.record for r in recs if r.ok and r.record), None) or \
            next((r.record for r in recs if r.record), None)
        settings = record.settings if record else None
        rows.append({
            "variant": name,
            "engine": settings.engine if settings else None,
            "engine_version": f"{record.engine.library} {record.engine.version}"
            if record else None,
            "precision": settings.precision if settings else None,
            "zero_stage": settings.zero_stage if settings else None,
            "grad_accumulation": record.batches.grad_accumulation if record else None,
            "timing_method": record.timing.method if record else None,
            "points": len(recs), "failed": sum(not r.ok for r in recs),
        })
    return pd.DataFrame(rows)
