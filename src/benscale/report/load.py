"""Reading a study: study.json, then per point its run directory (run.json, epochs.csv).

A point whose run directory, run.json or epochs.csv is missing, or whose run.json says
anything but ``ok``, is a *failed* point: it is kept, with the reason and the tail of its
log, so the report lists it instead of silently dropping it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benscale.errors import ConfigError

#: Lines of a failed point's log shown in the report.
LOG_TAIL_LINES = 40


@dataclass
class RunRecord:
    """One point of a study and what its run left behind.

    Attributes:
        point: the point's entry of study.json (name, mode, nodes, ..., run_dir, log).
        run_dir: absolute run directory.
        status: ``ok`` or ``failed``.
        reason: why the point failed (empty when ok).
        run_json: the parsed run.json (empty when missing or unreadable).
        epochs: epochs.csv as a DataFrame (empty when missing).
        log_path: the point's log file (may not exist).
        log_tail: the last lines of the log, for failed points.
    """

    point: dict[str, Any]
    run_dir: Path
    status: str
    reason: str = ""
    run_json: dict[str, Any] = field(default_factory=dict)
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    log_path: Path | None = None
    log_tail: str = ""

    @property
    def name(self) -> str:
        """The point's name (``strong-n1-r0``)."""
        return str(self.point["name"])

    @property
    def ok(self) -> bool:
        """Whether the run completed and its outputs are usable."""
        return self.status == "ok"


@dataclass
class Study:
    """A study as the report sees it: its document, its folder and every point's record."""

    path: Path
    doc: dict[str, Any]
    runs: list[RunRecord]

    @property
    def name(self) -> str:
        """The study's name."""
        return str(self.doc.get("study", self.path.parent.name))

    @property
    def config(self) -> dict[str, Any]:
        """The resolved study config."""
        return self.doc.get("config") or {}

    @property
    def machine(self) -> dict[str, Any]:
        """The machine record of study.json."""
        return self.doc.get("machine") or {}

    @property
    def machine_name(self) -> str:
        """The system's name (study config ``machine.name``), for titles and references."""
        return str(self.machine.get("name") or (self.config.get("machine") or {}).get("name")
                   or "unknown machine")


def load_study(study_json: Path) -> Study:
    """Read study.json and every point's run directory.

    Raises:
        ConfigError: study.json is missing, not JSON, or has no ``points`` list.
    """
    try:
        doc = json.loads(Path(study_json).read_text())
    except OSError as exc:
        raise ConfigError(f"{study_json}: cannot read the study file ({exc}); write it with "
                          "`benscale scaling study` or the workflow's `study` rule") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{study_json}: not valid JSON ({exc})") from exc
    if not isinstance(doc.get("points"), list):
        raise ConfigError(f"{study_json}: no 'points' list; expected the document of "
                          "`benscale scaling study` (docs/report.md)")
    base = Path(study_json).resolve().parent
    return Study(Path(study_json), doc, [load_run(base, p) for p in doc["points"]])


def load_run(base: Path, point: dict[str, Any]) -> RunRecord:
    """The record of one point (never raises: problems become a failed record)."""
    run_dir = base / point.get("run_dir", f"runs/{point['name']}")
    log = base / point["log"] if point.get("log") else None
    rec = RunRecord(point=point, run_dir=run_dir, status="failed", log_path=log)
    rec.reason = _problem(rec)
    if not rec.reason:
        rec.status = "ok"
    else:
        rec.log_tail = _tail(log)
    return rec


def _problem(rec: RunRecord) -> str:
    """Fill ``rec`` from its run directory; return what is wrong ('' when nothing)."""
    if not rec.run_dir.is_dir():
        return f"no run directory {rec.run_dir} (the job did not start or was removed)"
    run_json = rec.run_dir / "run.json"
    if not run_json.is_file():
        return f"no run.json in {rec.run_dir} (the job died before its first output)"
    try:
        rec.run_json = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"{run_json}: unreadable ({exc})"
    epochs_csv = rec.run_dir / "epochs.csv"
    if epochs_csv.is_file():
        try:
            rec.epochs = pd.read_csv(epochs_csv)
        except (OSError, ValueError) as exc:
            return f"{epochs_csv}: unreadable ({exc})"
    status = rec.run_json.get("status")
    if status != "ok":
        done = len(rec.epochs)
        return (f"run.json status is {status!r} after {done} epoch(s)" +
                (" (killed or still running)" if status == "running" else ""))
    if rec.epochs.empty:
        return f"{epochs_csv}: missing or empty although run.json says ok"
    return ""


def _tail(log: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``log`` ('' with a note when it does not exist)."""
    if log is None:
        return "(no log path in study.json)"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:])
