"""The MLPerf event log of a run (``RUN_DIR/mllog.txt``), written by mlperf-logging itself.

Every line is mlperf-logging's own format, ``:::MLLOG {json}``, so MLPerf's compliance
checker reads the file as it is: ``python -m mlperf_logging.compliance_checker --usage
training --config ABS_PATH/mlperf-rules.yaml RUN_DIR/mllog.txt`` with the rules file
benscale ships for its benchmark ``resnet50-bigearthnet`` (:data:`RULES`; MLPerf's own
rules accept only MLPerf's benchmarks). The events are those MLPerf's training rules ask
for: the submission header, ``cache_clear``, ``init_start``/``init_stop``, ``run_start``/
``run_stop`` with a status, ``epoch_*`` and ``eval_*`` with ``epoch_num``,
``eval_accuracy``, the sample counts, the global batch, the optimizer's hyper-parameters,
the seed, plus ``number_of_nodes`` and ``accelerators_per_node``. Only rank 0 logs.

A resumed run appends to the same file: one run, one ``run_start`` and one ``run_stop``;
the resumption itself is a ``benscale_resume`` event (unknown keys are allowed by the
checker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlperf_logging.mllog import constants
from mlperf_logging.mllog.mllog import MLLogger

from benscale.train.config import TrainConfig

#: The benchmark's name in the log (``submission_benchmark``).
BENCHMARK = "resnet50-bigearthnet"
#: The compliance checker's rules for it (package data, the checker's YAML format).
RULES = "mlperf-rules.yaml"
#: Keys MLPerf's HPC rules use for the machine's size (training's have none).
NUMBER_OF_NODES = "number_of_nodes"
ACCELERATORS_PER_NODE = "accelerators_per_node"
RESUME = "benscale_resume"
#: Optimizer hyper-parameter keys per optimizer (mlperf-logging's constants).
OPTIMIZER_KEYS: dict[str, tuple[str, str, str]] = {
    "sgd": (constants.OPT_BASE_LR, constants.OPT_WEIGHT_DECAY, "opt_momentum"),
    "adamw": (constants.OPT_BASE_LR, constants.OPT_ADAMW_WEIGHT_DECAY,
              constants.OPT_ADAMW_BETA_1),
    "lamb": (constants.OPT_BASE_LR, constants.OPT_LAMB_WEIGHT_DECAY,
             constants.OPT_LAMB_BETA_1),
}


def rules_path() -> Path:
    """Absolute path of the packaged compliance rules (the checker needs an absolute one)."""
    return Path(str(resources.files("benscale.data").joinpath(RULES))).resolve()


@dataclass(frozen=True)
class RunShape:
    """What the header of the log says about the run."""

    global_batch: int
    world_size: int
    nodes: int
    accelerators_per_node: int
    train_samples: int
    eval_samples: int
    peak_lr: float
    platform: str


def open_log(path: Path) -> MLLogger:
    """An MLLogger appending mlperf-logging's lines to ``path`` (a resumed run continues
    the file)."""
    logger = logging.getLogger(f"benscale.mllog.{path.resolve()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return MLLogger(logger=logger, default_namespace="", default_stack_offset=2)


def close_log(log: MLLogger) -> None:
    """Flush and close the file behind ``log``."""
    for handler in list(log.logger.handlers):
        handler.close()
        log.logger.removeHandler(handler)


def log_init_start(log: MLLogger) -> None:
    """The submission header and the start of initialisation (a fresh run only)."""
    log.event(key=constants.SUBMISSION_BENCHMARK, value=BENCHMARK)
    log.event(key=constants.SUBMISSION_ORG, value="benscale")
    log.event(key=constants.SUBMISSION_DIVISION, value="open")
    log.event(key=constants.SUBMISSION_STATUS, value="research")
    # benscale does not drop the page cache between runs; the key is required.
    log.event(key=constants.CACHE_CLEAR, value=False)
    log.start(key=constants.INIT_START)


def log_run_start(log: MLLogger, config: TrainConfig, shape: RunShape,
                  resumed_from: int) -> None:
    """The run's hyper-parameters, then ``init_stop`` + ``run_start`` (a fresh run) or a
    ``benscale_resume`` event."""
    if resumed_from:
        log.event(key=RESUME, value=resumed_from, metadata={"resumed_from_epoch": resumed_from})
        return
    log.event(key=constants.SUBMISSION_PLATFORM, value=shape.platform)
    log.event(key=NUMBER_OF_NODES, value=shape.nodes)
    log.event(key=ACCELERATORS_PER_NODE, value=shape.accelerators_per_node)
    log.event(key=constants.SEED, value=config.seed)
    log.event(key=constants.GLOBAL_BATCH_SIZE, value=shape.global_batch)
    log.event(key=constants.GRADIENT_ACCUMULATION_STEPS, value=config.grad_accumulation)
    log.event(key=constants.TRAIN_SAMPLES, value=shape.train_samples)
    log.event(key=constants.EVAL_SAMPLES, value=shape.eval_samples)
    opt = config.optimizer
    lr_key, decay_key, moment_key = OPTIMIZER_KEYS[opt.name]
    log.event(key=constants.OPT_NAME, value=opt.name)
    log.event(key=lr_key, value=shape.peak_lr)
    log.event(key=decay_key, value=opt.weight_decay)
    log.event(key=moment_key, value=opt.momentum if opt.name == "sgd" else opt.betas[0])
    log.event(key=constants.OPT_LR_WARMUP_EPOCHS, value=config.warmup_epochs)
    log.event(key=constants.OPT_LR_DECAY_SCHEDULE, value=config.schedule)
    log.end(key=constants.INIT_STOP)
    log.start(key=constants.RUN_START)


def log_epoch_start(log: MLLogger, epoch: int) -> None:
    """An epoch begins (1-based, as MLPerf counts)."""
    log.start(key=constants.EPOCH_START, metadata={constants.EPOCH_NUM: epoch})


def log_epoch_stop(log: MLLogger, epoch: int, samples_per_s: float) -> None:
    """An epoch's training ends (evaluation follows)."""
    log.end(key=constants.EPOCH_STOP, metadata={constants.EPOCH_NUM: epoch,
                                                "samples_per_s": samples_per_s})


def log_eval(log: MLLogger, epoch: int, map_macro: float, map_micro: float,
             start: bool) -> None:
    """``eval_start`` (``start``), or ``eval_stop`` and ``eval_accuracy`` (macro mAP)."""
    if start:
        log.start(key=constants.EVAL_START, metadata={constants.EPOCH_NUM: epoch})
        return
    log.end(key=constants.EVAL_STOP, metadata={constants.EPOCH_NUM: epoch})
    log.event(key=constants.EVAL_ACCURACY, value=map_macro,
              metadata={constants.EPOCH_NUM: epoch, "map_micro": map_micro})


def log_run_stop(log: MLLogger, success: bool, test_map_macro: float | None) -> None:
    """The end of the run, with its status."""
    log.end(key=constants.RUN_STOP,
            metadata={constants.STATUS: constants.SUCCESS if success else constants.ABORTED,
                      "test_map_macro": test_map_macro})
