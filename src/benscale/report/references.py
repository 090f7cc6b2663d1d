"""Reference values with tolerances, in the spirit of ReFrame's ``reference`` dictionaries.

A reference file (YAML) names a system and lists checks; each check picks rows of one of
the report's tables, takes the median of a column and marks it within / outside its bounds::

    system: local-cpu
    title: demo study on this machine
    source: where the values come from
    checks:
      - name: strong-scaling efficiency at 4 ranks
        table: scaling            # scaling (default) or runs
        where: {mode: strong, world_size: 4}
        metric: efficiency_median
        value: 0.6                # expected value (documentation; bounds decide)
        lower: -0.5               # relative: bound = value + lower * |value| (null: none)
        upper: 0.5
        # or absolute bounds: min: 0.3, max: 1.2 (these win over lower/upper)
        unit: fraction
        from_paper: false         # true only where the number is printed in the source

A check whose rows are absent is ``not measured`` (e.g. 96 GPUs on a laptop). In a study
with several variants, a check whose ``where`` names no variant is evaluated once per
variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benscale.errors import ConfigError

STATES = ("within", "outside", "not measured")
#: References shipped with benscale (package data).
REFERENCES_DIR = Path(__file__).resolve().parent.parent / "data" / "references"


@dataclass(frozen=True)
class CheckResult:
    """One reference check against the study."""

    reference: str
    system: str
    name: str
    metric: str
    where: str
    expected: float | None
    low: float | None
    high: float | None
    measured: float | None
    unit: str
    state: str
    from_paper: bool
    note: str
    variant: str = ""


def packaged_reference(name: str) -> Path:
    """The path of a reference shipped in benscale/references (``sedona2019-juwels``)."""
    path = REFERENCES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no packaged reference {name!r} in {path.parent}")
    return path


def load_reference(path: str | Path) -> dict[str, Any]:
    """Parse and check a reference file.

    Raises:
        ConfigError: unreadable file, or a check without metric or bounds.
    """
    p = Path(path)
    if not p.is_file() and not p.suffix:
        p = packaged_reference(str(path))
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the reference file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), list):
        raise ConfigError(f"{p}: expected a mapping with 'system' and a 'checks' list "
                          "(see docs/report.md)")
    for i, check in enumerate(doc["checks"]):
        if "metric" not in check or not any(k in check for k in ("min", "max", "value")):
            raise ConfigError(f"{p}: check {i} ({check.get('name', '?')}) needs 'metric' and "
                              "'value' with lower/upper, or absolute 'min'/'max'")
    doc["_path"] = str(p)
    return doc


def bounds(check: dict[str, Any]) -> tuple[float | None, float | None]:
    """Absolute (low, high) bounds of a check; None where unbounded."""
    value = check.get("value")
    low = check.get("min")
    high = check.get("max")
    if low is None and value is not None and check.get("lower") is not None:
        low = value + float(check["lower"]) * abs(value)
    if high is None and value is not None and check.get("upper") is not None:
        high = value + float(check["upper"]) * abs(value)
    return (None if low is None else float(low), None if high is None else float(high))


def _select(table: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    rows = table
    for key, want in where.items():
        if key not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[key].astype(str) == str(want)]
    return rows


def system_note(reference_system: str, system: str) -> str:
    """What a check's note starts with when the reference is for another system."""
    if reference_system and reference_system != system:
        return f"reference for {reference_system}, study ran on {system}. "
    return ""


def _per_variant(check: dict[str, Any], tables: dict[str, pd.DataFrame]) -> list[dict]:
    """The ``where`` of a check, once per variant of the study when it names none: each
    variant is held to the reference on its own (a median over variants would blur them)."""
    where = dict(check.get("where") or {})
    table = tables.get(check.get("table", "scaling"), pd.DataFrame())
    if "variant" in where or "variant" not in table or table["variant"].nunique() < 2:
        return [where]
    return [{"variant": v, **where} for v in dict.fromkeys(table["variant"].dropna())]


def evaluate(doc: dict[str, Any], tables: dict[str, pd.DataFrame],
             system: str) -> list[CheckResult]:
    """Evaluate every check of a reference against the report's tables (per variant when
    the study has several and the check names none)."""
    ref_name = Path(doc.get("_path", "reference")).stem
    return [_evaluate(ref_name, doc, check, where, tables, system)
            for check in doc["checks"] for where in _per_variant(check, tables)]


def _evaluate(ref_name: str, doc: dict[str, Any], check: dict[str, Any],
              where: dict[str, Any], tables: dict[str, pd.DataFrame],
              system: str) -> CheckResult:
    """One check on the rows that ``where`` selects."""
    table = tables.get(check.get("table", "scaling"), pd.DataFrame())
    rows = _select(table, where)
    if check.get("table", "scaling") == "runs" and "status" in rows:
        rows = rows[rows["status"] == "ok"]
    metric = check["metric"]
    values = rows[metric].dropna() if metric in rows else pd.Series(dtype=float)
    low, high = bounds(check)
    note = f"{system_note(str(doc.get('system') or ''), system)}" \
        f"{str(check.get('note', '')).strip()}".strip()
    measured = float(values.astype(float).median()) if len(values) else None
    if measured is None or math.isnan(measured):
        state, measured = "not measured", None
    else:
        inside = (low is None or measured >= low) and (high is None or measured <= high)
        state = "within" if inside else "outside"
    return CheckResult(
        ref_name, str(doc.get("system", "")), str(check.get("name", metric)), metric,
        ", ".join(f"{k}={v}" for k, v in where.items()), check.get("value"), low, high,
        measured, str(check.get("unit", "")), state, bool(check.get("from_paper", False)),
        note, str(where.get("variant", "")))


def results_frame(results: list[CheckResult]) -> pd.DataFrame:
    """The checks as a table (references.csv)."""
    return pd.DataFrame([r.__dict__ for r in results]) if results else pd.DataFrame(
        columns=list(CheckResult.__dataclass_fields__))
