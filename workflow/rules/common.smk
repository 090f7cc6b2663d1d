# Configuration, paths and the points of the study; no rules here (every function of the
# workflow lives in this file).
import json
import shlex
import subprocess
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from benscale.errors import BenscaleError
from benscale.files.archive import TAR_SUFFIXES
from benscale.files.batches import MODES
from benscale.study import (
    StudyConfig,
    check_local_cap,
    find_point,
    launch_command,
    plan_points,
    set_args,
    slurm_resources,
)
from benscale.study.launchers import LOCAL_LAUNCHERS


validate(config, schema="../schemas/config.schema.yaml")

ENV = "../envs/benscale.yaml"
STUDY = config["study"]["name"]
RESULTS = f"results/{STUDY}"
DATA = config["data"]["workdir"]
SYNTH_ARCHIVE = f"{DATA}/archive"
POINT = "{variant}/{mode}-n{nodes}-r{repeat}"


def _plan():
    """The typed config and the points of the study; a planning error stops the workflow
    before any job."""
    try:
        study = StudyConfig.from_dict(config)
        points = plan_points(study)
        check_local_cap(points, study.launcher.kind, study.launcher.max_local_procs)
    except BenscaleError as exc:
        raise WorkflowError(f"config: {exc}") from None
    return study, points


STUDY_CONFIG, POINTS = _plan()


wildcard_constraints:
    variant=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    mode="|".join(MODES),
    nodes=r"\d+",
    repeat=r"\d+",


def all_targets():
    """The targets of the default rule, all: every point's run and the report."""
    return [
        *expand(f"{RESULTS}/runs/{{point}}/run.json", point=[p.name for p in POINTS]),
        f"{RESULTS}/report",
    ]


# --------------------------------------------------------------------------- data
def streams_archive():
    """Whether the configured archive is a .tar* file, read as one stream by `benscale
    extract` (no ingest rule, nothing unpacked); a folder goes through ingest + extract."""
    return str(config["data"]["archive"] or "").endswith(tuple(TAR_SUFFIXES))


def archive_input(wildcards):
    """The configured archive, or the synthetic one (which makes `synth` run)."""
    return config["data"]["archive"] or SYNTH_ARCHIVE


def stream_args(wildcards):
    """Format, official lists and streaming options of `benscale extract ARCHIVE`."""
    data = config["data"]
    args = ["--format", data["format"],
            "--stream-buffer-mb", str(data["extract"]["stream_buffer_mb"]),
            "--decompressor", data["extract"]["decompressor"]]
    if data["v1_lists"]:
        args += ["--v1-lists", data["v1_lists"]]
    return shlex.join(args)


def ingest_args(wildcards, input):
    """Format and official lists for `benscale ingest` (the synthetic v1 archive has its own)."""
    data = config["data"]
    if data["archive"] is None:
        fmt = data["synth"]["format"]
        lists = str(Path(input.archive) / "v1-lists") if fmt == "v1" else None
    else:
        fmt, lists = data["format"], data["v1_lists"]
    args = ["--format", fmt]
    if lists:
        args += ["--v1-lists", lists]
    return shlex.join(args)


# --------------------------------------------------------------------------- training
def point_of(wildcards):
    """The planned point of a train job's wildcards."""
    return find_point(
        STUDY_CONFIG, wildcards.variant, wildcards.mode, wildcards.nodes, wildcards.repeat
    )


def train_config_input(wildcards):
    """The base train config file as an input (none: the packaged defaults)."""
    return config["train"]["config"] or []


def train_config_arg(wildcards, input):
    return f"--config {shlex.quote(input.config)}" if config["train"]["config"] else ""


def train_threads(wildcards):
    """Cores a point occupies: locally all its processes' threads (Snakemake caps this at
    --cores, so on a small machine points run one after the other, as timings need)."""
    point = point_of(wildcards)
    if config["launcher"]["kind"] in LOCAL_LAUNCHERS:
        return point.world_size * config["launcher"]["threads_per_proc"]
    return config["slurm"]["cpus_per_task"]


def slurm_resource(name, unset=None):
    """A resource of the point's Slurm allocation (``unset`` where the point sets none)."""
    return lambda wildcards: slurm_resources(point_of(wildcards), STUDY_CONFIG.slurm).get(
        name, unset
    )


# --------------------------------------------------------------------------- report
def reference_files(wildcards):
    """Reference files as inputs (bare names are references packaged with benscale)."""
    return [r for r in config["report"]["references"] if r.endswith((".yaml", ".yml"))]


def reference_args(wildcards):
    return shlex.join(a for ref in config["report"]["references"] for a in ("--reference", ref))


def report_after_failure():
    """Build the report from the points that completed, after a failed run (onerror).

    Runs only when study.json exists (the data stages and the planning went through);
    a failure here is logged, never raised, so Snakemake's own error stays the message.
    """
    study_json = Path(RESULTS) / "study.json"
    if not study_json.exists():
        logger.warning(f"benscale: {study_json} missing, no report of the failed run")
        return
    out, log = Path(RESULTS) / "report", Path(RESULTS) / "logs" / "report-after-failure.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    refs = [arg for ref in config["report"]["references"] for arg in ("--reference", ref)]
    argv = ["benscale", "report", "--study", str(study_json), "--out", str(out), *refs]
    with open(log, "w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc == 0:
        logger.warning(f"benscale: some points failed; report of the completed points and "
                       f"the failed ones (with their logs) in {out}/index.html. Re-run the "
                       "same command to redo only the failed points.")
    else:
        logger.warning(f"benscale: the report after the failure failed too, see {log}")


def train_launch(wildcards):
    """The launcher prefix of a point's training command."""
    return launch_command(point_of(wildcards), STUDY_CONFIG)


def train_sets(wildcards):
    """The point's `--set` overrides of `benscale train`."""
    return shlex.join(set_args(point_of(wildcards), STUDY_CONFIG))
