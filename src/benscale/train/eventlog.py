"""MLPerf-style event log (``RUN_DIR/mllog.jsonl``) through the mlperf-logging package.

mlperf-logging formats each event as ``:::MLLOG {json}``; we drop that prefix so the file
is plain JSON lines (``json.loads`` per line), keeping the package's event schema and key
names (``run_start``, ``epoch_start``, ``eval_accuracy``, ``global_batch_size`` ...).
Only rank 0 logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlperf_logging.mllog import constants
from mlperf_logging.mllog.mllog import MLLogger

from benscale.train.config import TrainConfig

PREFIX = ":::MLLOG "


class _StripPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().lstrip("\n")
        return message[len(PREFIX):] if message.startswith(PREFIX) else message


def open_log(path: Path) -> MLLogger:
    """An MLLogger appending JSON lines to ``path`` (a resumed run continues the file)."""
    logger = logging.getLogger(f"benscale.mllog.{path.resolve()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(_StripPrefix())
    logger.addHandler(handler)
    return MLLogger(logger=logger, default_namespace="benscale", default_stack_offset=2)


def close_log(log: MLLogger) -> None:
    """Flush and close the file behind ``log``."""
    for handler in list(log.logger.handlers):
        handler.close()
        log.logger.removeHandler(handler)


def log_config(log: MLLogger, config: TrainConfig, global_batch: int,
               world_size: int, n_train: int, n_eval: int, lr: float) -> None:
    """The submission-style header events."""
    log.event(key=constants.SUBMISSION_BENCHMARK, value="resnet50-bigearthnet")
    log.event(key=constants.SEED, value=config.seed)
    log.event(key=constants.GLOBAL_BATCH_SIZE, value=global_batch)
    log.event(key="world_size", value=world_size)
    log.event(key=constants.TRAIN_SAMPLES, value=n_train)
    log.event(key=constants.EVAL_SAMPLES, value=n_eval)
    log.event(key=constants.OPT_NAME, value=config.optimizer.name)
    log.event(key=constants.OPT_BASE_LR, value=lr)
    log.event(key=constants.GRADIENT_ACCUMULATION_STEPS, value=config.grad_accumulation)
