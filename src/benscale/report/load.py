"""Reading a study: study.json, then per point its run directory (run.json, epochs.csv).

A point whose run directory, run.json or epochs.csv is missing, or whose run.json says
anything but ``ok``, is a *failed* point: it is kept, with the reason and the tail of its
log, so the report lists it instead of silently dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benscale.errors import DataError
from benscale.files.run import EPOCHS_CSV, RUN_JSON, RunRecord
from benscale.files.study import Point, StudyDocument

#: Lines of a failed point's log shown in the report.
LOG_TAIL_LINES = 40


@dataclass
class PointResult:
    """One point of a study and what its run left behind.

    Attributes:
        point: the point as planned (study.json).
        run_dir: absolute run directory.
        status: ``ok`` or ``failed``.
        reason: why the point failed (empty when ok).
        record: the run's run.json (None when missing or unreadable).
        epochs: epochs.csv as a DataFrame (empty when missing).
        log_path: the point's log file (may not exist).
        log_tail: the last lines of the log, for failed points.
    """

    point: Point
    run_dir: Path
    status: str
    reason: str = ""
    record: RunRecord | None = None
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    log_path: Path | None = None
    log_tail: str = ""

    @property
    def name(self) -> str:
        """The point's name (``strong-n1-r0``)."""
        return self.point.name

    @property
    def ok(self) -> bool:
        """Whether the run completed and its outputs are usable."""
        return self.status == "ok"


@dataclass
class StudyResults:
    """A study as the report sees it: its document, its file and every point's result."""

    path: Path
    doc: StudyDocument
    runs: list[PointResult]

    @property
    def name(self) -> str:
        """The study's name."""
        return self.doc.study

    @property
    def machine_name(self) -> str:
        """The system's name (study config ``machine.name``), for titles and references."""
        return self.doc.machine.name or self.doc.config.machine.name or "unknown machine"

    @property
    def base(self) -> Path:
        """The study folder, which the points' paths are relative to."""
        return self.path.resolve().parent


def load_study(study_json: Path) -> StudyResults:
    """Read study.json and every point's run directory.

    Raises:
        ConfigError: study.json is missing, not JSON, or not a study document.
    """
    doc = StudyDocument.read(Path(study_json))
    base = Path(study_json).resolve().parent
    return StudyResults(Path(study_json), doc, [load_point(base, p) for p in doc.points])


def load_point(base: Path, point: Point) -> PointResult:
    """The result of one point (never raises: problems become a failed result)."""
    log = base / point.log
    result = PointResult(point=point, run_dir=base / point.run_dir, status="failed",
                         log_path=log)
    result.reason = _problem(result)
    if not result.reason:
        result.status = "ok"
    else:
        result.log_tail = _tail(log)
    return result


def _problem(result: PointResult) -> str:
    """Fill ``result`` from its run directory; return what is wrong ('' when nothing)."""
    if not result.run_dir.is_dir():
        return f"no run directory {result.run_dir} (the job did not start or was removed)"
    if not (result.run_dir / RUN_JSON).is_file():
        return f"no run.json in {result.run_dir} (the job died before its first output)"
    try:
        result.record = RunRecord.read(result.run_dir)
    except DataError as exc:
        return f"unreadable: {exc}"
    epochs_csv = result.run_dir / EPOCHS_CSV
    if epochs_csv.is_file():
        try:
            result.epochs = pd.read_csv(epochs_csv)
        except (OSError, ValueError) as exc:
            return f"{epochs_csv}: unreadable ({exc})"
    status = result.record.status
    if status != "ok":
        done = len(result.epochs)
        return (f"run.json status is {status!r} after {done} epoch(s)" +
                (" (killed or still running)" if status == "running" else ""))
    if result.epochs.empty:
        return f"{epochs_csv}: missing or empty although run.json says ok"
    return ""


def _tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``log`` ('' with a note when it does not exist)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:])
