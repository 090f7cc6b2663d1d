"""The reviewer bundle: everything needed to judge and re-run a study, in one folder.

``REPORT_DIR/bundle/`` mirrors the study folder's layout (:mod:`benscale.files.bundle`),
so it is itself a study that ``benscale report --study bundle/study.json`` reads and
``benscale reproduce`` re-runs:

    study.json            the study document (resolved config, machine, points)
    config.yaml           the resolved study config, readable
    environment.txt       the package set the runs ran with (name==version, from run.json)
    packages.json         package versions recorded by the runs
    machine.json          the machine: study record + each run's hosts, GPU software
                          stack (CUDA, cuDNN, NCCL, driver) and MPI library
    runs/<point>/         run.json, epochs.csv, per_class_ap.csv, mllog.jsonl, ds_config.json
    logs/train/<point>.log
    MANIFEST.json         sha256 of every file above
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml

from benscale.atomic import atomic_path, write_json, write_text
from benscale.files.bundle import (
    CONFIG_YAML,
    ENVIRONMENT_FILE,
    MACHINE_JSON,
    MANIFEST_JSON,
    PACKAGES_JSON,
)
from benscale.files.run import RECORD_FILES
from benscale.files.study import STUDY_JSON
from benscale.report.load import StudyResults
from benscale.typed import to_mapping


def environment_lines(study: StudyResults) -> list[str]:
    """``name==version`` of every package of the environment the study's runs recorded
    (the first run that recorded one; runs of one study share their environment)."""
    for rec in study.runs:
        if rec.record and rec.record.provenance.environment:
            return [f"{n}=={v}" for n, v in rec.record.provenance.environment.items()]
    return []


def mpi_library(version: str | None) -> str | None:
    """The first line of an MPI library's version text (vendor and version)."""
    return version.strip().splitlines()[0].strip() if version and version.strip() else None


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(study: StudyResults, out: Path) -> dict[str, Any]:
    """Write the bundle to ``out``; returns its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    study.doc.write(out / STUDY_JSON)
    write_text(out / CONFIG_YAML, yaml.safe_dump(study.doc.config.to_dict(), sort_keys=False))
    environment = environment_lines(study)
    if environment:
        write_text(out / ENVIRONMENT_FILE, "\n".join(environment) + "\n")
    machines: dict[str, Any] = {"study": to_mapping(study.doc.machine), "runs": {}}
    packages: dict[str, str] = {}
    for rec in study.runs:
        for name in RECORD_FILES:
            if (rec.run_dir / name).is_file():
                _copy(rec.run_dir / name, out / rec.point.run_dir / name)
        if rec.log_path and rec.log_path.is_file():
            _copy(rec.log_path, out / rec.point.log)
        if rec.record is not None:
            prov = rec.record.provenance
            machines["runs"][rec.name] = {
                "machine": to_mapping(prov.machine), "hosts": list(rec.record.world.hosts),
                "host_details": [to_mapping(h) for h in prov.host_details],
                "accelerators": to_mapping(prov.accelerators),
                "mpi_library": mpi_library(prov.mpi.library_version if prov.mpi else None),
                "slurm": prov.slurm}
            packages.update({k: v for k, v in prov.packages.items() if v})
    write_json(out / MACHINE_JSON, machines)
    write_json(out / PACKAGES_JSON, packages or study.doc.machine.packages)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_JSON)
    manifest = {"study": study.name, "environment_recorded": bool(environment),
                "files": {str(p.relative_to(out)): _sha256(p) for p in files}}
    write_json(out / MANIFEST_JSON, manifest)
    return manifest
