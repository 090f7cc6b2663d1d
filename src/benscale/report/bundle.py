"""The reviewer bundle: everything needed to judge and re-run a study, in one folder.

``REPORT_DIR/bundle/`` mirrors the study folder's layout, so it is itself a study that
``benscale report --study bundle/study.json`` reads and ``benscale reproduce`` re-runs:

    study.json            the study document (resolved config, machine, points)
    config.yaml           the resolved study config, readable
    requirements.lock     the exact package pins of the install (when found)
    packages.json         package versions recorded by the runs
    machine.json          the machine: study record + each run's host description
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

import benscale
from benscale.atomic import atomic_path, write_json, write_text
from benscale.report.load import Study

#: Files of a run directory a reviewer needs (checkpoints stay out: large, re-creatable).
RUN_FILES: tuple[str, ...] = ("run.json", "epochs.csv", "per_class_ap.csv", "mllog.jsonl",
                              "ds_config.json")


def find_lock(study: Study) -> Path | None:
    """requirements.lock: named in study.json or its config, beside the study, or at the
    root of the benscale checkout that wrote it."""
    candidates = [study.doc.get("requirements_lock"),
                  (study.config.get("report") or {}).get("requirements_lock")]
    here = study.path.resolve().parent
    candidates += [here / "requirements.lock", here.parent.parent / "requirements.lock",
                   Path(benscale.__file__).resolve().parents[2] / "requirements.lock"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


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


def write_bundle(study: Study, out: Path) -> dict[str, Any]:
    """Write the bundle to ``out``; returns its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(study.doc)
    lock = find_lock(study)
    doc["requirements_lock"] = "requirements.lock" if lock else None
    write_json(out / "study.json", doc)
    write_text(out / "config.yaml", yaml.safe_dump(study.config, sort_keys=False))
    if lock:
        _copy(lock, out / "requirements.lock")
    machines, packages = {"study": study.machine, "runs": {}}, {}
    for rec in study.runs:
        rel = Path(rec.point.get("run_dir", f"runs/{rec.name}"))
        for name in RUN_FILES:
            if (rec.run_dir / name).is_file():
                _copy(rec.run_dir / name, out / rel / name)
        if rec.log_path and rec.log_path.is_file():
            _copy(rec.log_path, out / rec.point["log"])
        prov = rec.run_json.get("provenance") or {}
        if prov.get("machine"):
            machines["runs"][rec.name] = {"machine": prov["machine"],
                                          "hosts": (rec.run_json.get("world") or {}).get("hosts"),
                                          "slurm": prov.get("slurm")}
        packages.update({k: v for k, v in (prov.get("packages") or {}).items() if v})
    write_json(out / "machine.json", machines)
    write_json(out / "packages.json", packages or study.machine.get("packages") or {})
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {"study": study.name, "lock_found": lock is not None,
                "lock_source": str(lock) if lock else None,
                "files": {str(p.relative_to(out)): _sha256(p) for p in files}}
    write_json(out / "MANIFEST.json", manifest)
    return manifest
