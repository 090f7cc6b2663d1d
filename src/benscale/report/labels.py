"""Column labels with units: one mapping for every table of the page, the figures' axes and
the comparison page. The CSV files keep the raw column names (tools read them); people read
these.
"""

from __future__ import annotations

import pandas as pd

#: Raw column name -> what a reader sees (units in brackets).
LABELS: dict[str, str] = {
    "study": "study",
    "machine": "machine",
    "series": "study / variant",
    "point": "point",
    "variant": "variant",
    "mode": "mode",
    "repeat": "repeat",
    "status": "status",
    "reason": "reason",
    "nodes": "nodes",
    "gpus_per_node": "GPUs per node",
    "world_size": "GPUs (ranks)",
    "baseline_world_size": "baseline GPUs",
    "runs": "runs",
    "epochs": "epochs",
    "epoch": "epoch",
    "global_batch": "global batch [samples]",
    "batch_per_gpu": "batch per GPU [samples]",
    "engine": "engine",
    "engine_version": "engine version",
    "precision": "precision",
    "zero_stage": "ZeRO stage",
    "grad_accumulation": "gradient accumulation [micro-steps]",
    "timing_method": "how communication was timed",
    "first_epoch_time_s": "first epoch (warm-up) [s]",
    "epoch_time_s": "epoch time [s]",
    "epoch_time_s_mean": "epoch time, mean [s]",
    "samples_per_s": "throughput [samples/s]",
    "steps_per_epoch": "steps per epoch",
    "data_time_s": "data wait [s]",
    "compute_time_s": "compute [s]",
    "comm_time_s": "communication [s]",
    "optimizer_time_s": "optimizer [s]",
    "speedup": "speedup [x]",
    "ideal_speedup": "ideal speedup [x]",
    "efficiency": "efficiency [fraction of ideal]",
    "comm_share": "communication share [fraction of epoch]",
    "exposed_comm_share": "exposed communication share [fraction of epoch]",
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "val_map_macro": "val macro mAP [0..1]",
    "val_map_micro": "val micro mAP [0..1]",
    "val_f1_macro": "val macro F1 [0..1]",
    "val_f1_micro": "val micro F1 [0..1]",
    "best_val_map_macro": "best val macro mAP [0..1]",
    "best_epoch": "best epoch",
    "final_val_map_macro": "final val macro mAP [0..1]",
    "test_map_macro": "test macro mAP [0..1]",
    "test_map_macro_change": "test macro mAP change vs baseline [0..1]",
    "test_f1_macro": "test macro F1 [0..1]",
    "time_to_target_s": "time to target mAP [s]",
    "time_to_train_s": "MLPerf time to train [s]",
    "best_variant": "fastest variant",
    "baseline_variant": "baseline variant",
    "runner_up": "runner-up",
    "runner_up_ratio": "runner-up time / fastest [x]",
    "variants_compared": "variants measured",
    "largest_world_size": "largest scale [GPUs]",
    "vs_fastest": "epoch time / fastest variant's [x]",
    "git_commit": "git commit",
    "date_utc": "date (UTC)",
    "hosts": "hosts",
    "slurm_job_id": "Slurm job",
    "system": "system",
    "measured_epoch_time_s": "measured epoch time [s]",
    "predicted_epoch_time_s": "predicted epoch time [s]",
    "ratio_predicted_to_measured": "predicted / measured [x]",
    "predicted_comm_s": "predicted exposed communication [s]",
    "measured_comm_time_s": "measured communication [s]",
    "predicted_compute_s": "predicted compute [s]",
    "exposed_comm_s": "exposed all-reduce per step [s]",
    "comm_s": "all-reduce per step [s]",
    "step_s": "step time [s]",
    "notes": "notes",
}

#: Suffixes of spread columns and how the label says them.
_STATS: tuple[tuple[str, str], ...] = (("_median", "median"), ("_min", "min"), ("_max", "max"),
                                       ("_spread", "median (min..max)"))


def label(column: str) -> str:
    """The label of a column; unknown ones read as words (``foo_bar`` -> ``foo bar``)."""
    if column in LABELS:
        return LABELS[column]
    for suffix, stat in _STATS:
        base = column.removesuffix(suffix)
        if base != column and base in LABELS:
            return f"{LABELS[base]}, {stat}"
    return column.replace("_", " ")


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with labelled column names (for display only)."""
    return df.rename(columns={c: label(c) for c in df.columns})
