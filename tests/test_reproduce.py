"""The demo study for REAL (config/config.yaml as `make demo` runs it: the deepspeed and ddp
variants, strong scaling, 1 and 2 emulated nodes x 2 ranks, fp32, `benscale train` under
mpiexec as the local profile runs it; one batch per epoch on the tiny dataset to keep it
short), its report, and its reproduction from the bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from benscale.cli import main
from benscale.files.study import StudyConfig
from benscale.study import study_document
from benscale.study.reproduce import Bundle, run_point

pytestmark = pytest.mark.slow


def _config(repo: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    assert cfg["study"]["nodes"] == [1, 2] and cfg["study"]["gpus_per_node"] == 2
    cfg["train"]["set"] = {**cfg["train"]["set"], "limit_batches": 1, "limit_eval_batches": 1}
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _venv_launchers_on_path() -> Any:
    """The venv's mpiexec first on PATH, as `make test` has it (and an activated venv)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        yield


@pytest.fixture(scope="module")
def real_study(tiny_shards: Path, repo_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/real/study.json with both points trained for real."""
    study_dir = tmp_path_factory.mktemp("real") / "results" / "demo"
    study_dir.mkdir(parents=True)
    doc = study_document(StudyConfig.from_dict(_config(repo_dir)))
    doc.write(study_dir / "study.json")
    bundle = Bundle(doc, study_dir)
    for point in doc.points:
        rc = run_point(bundle, point, tiny_shards, study_dir, use_recorded=False)
        log = (study_dir / point.log).read_text()[-3000:]
        assert rc == 0, f"{point.name} failed:\n{log}"
    return study_dir / "study.json"


@pytest.fixture(scope="module")
def real_report(real_study: Path) -> Path:
    out = real_study.parent / "report"
    assert main(["report", "--study", str(real_study), "--out", str(out),
                 "--reference", "local-cpu-demo"]) == 0
    return out


def test_report_of_real_study(real_report: Path) -> None:
    runs = pd.read_csv(real_report / "runs.csv")
    assert list(runs["status"]) == ["ok"] * 4
    assert sorted(runs["world_size"]) == [2, 2, 4, 4] and sorted(runs["nodes"]) == [1, 1, 2, 2]
    assert sorted(runs["variant"]) == ["ddp", "ddp", "deepspeed", "deepspeed"]
    assert (runs["engine"] == runs["variant"]).all()  # the demo's variants are its engines
    assert (runs["precision"] == "fp32").all() and (runs["epochs"] == 3).all()
    assert runs["test_map_macro"].between(0, 1).all()
    sc = pd.read_csv(real_report / "scaling.csv")
    for variant, group in sc.groupby("variant"):
        g = group.set_index("world_size")
        t2, t4 = g.loc[2, "epoch_time_s_median"], g.loc[4, "epoch_time_s_median"]
        assert g.loc[4, "efficiency_median"] == pytest.approx(t2 / (2 * t4), rel=1e-12), variant
    assert (real_report / "figures" / "epoch_time.png").stat().st_size > 5000
    model = pd.read_csv(real_report / "perfmodel_measured.csv")
    assert len(model) == 4 and (model["predicted_epoch_time_s"] > 0).all()
    refs = pd.read_csv(real_report / "references.csv")
    # the demo reference's checks select this geometry: all of them are measured
    assert "not measured" not in set(refs["state"])
    baseline = refs[refs["name"] == "baseline is its own reference"]
    assert len(baseline) == 2 and (baseline["state"] == "within").all()
    prov = pd.read_csv(real_report / "epochs.csv")
    assert prov["git_commit"].notna().all() and prov["config_hash"].notna().all()


def test_reproduce_bit_identical(real_report: Path, tiny_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    rc = main(["reproduce", str(real_report / "bundle"), "--out", str(out),
               "--data", str(tiny_shards), "--points", "ddp/strong-n2-r0"])
    cmp = pd.read_csv(out / "comparison.csv")
    metrics = cmp[cmp["kind"] == "metric"]
    assert len(metrics) > 20 and set(metrics["point"]) == {"ddp/strong-n2-r0"}
    bad = metrics[~metrics["agree"]]
    assert bad.empty, bad.to_string()
    assert {"epoch_time_s", "samples_per_s"} <= set(cmp[cmp["kind"] == "timing"]["metric"])
    assert (out / "comparison.md").read_text().startswith("# Reproduction of study demo")
    # timings may disagree on a busy machine; metrics must not
    timing_bad = cmp[(cmp["kind"] == "timing") & ~cmp["agree"]]
    assert rc == (1 if len(timing_bad) else 0)
    # the reproduction is itself a study the report can read
    assert main(["report", "--study", str(out / "study.json"), "--out",
                 str(tmp_path / "again-report")]) == 0


def test_reproduce_rejects_unknown_point(real_report: Path, tmp_path: Path) -> None:
    assert main(["reproduce", str(real_report / "bundle"), "--points", "weak-n9-r0",
                 "--out", str(tmp_path / "x")]) == 2
