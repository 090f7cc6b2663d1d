"""benscale report on hand-made run directories with known numbers (exact checks), plus
missing and failed points, figures, references and the reviewer bundle."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from benscale.cli import main
from benscale.errors import ConfigError
from benscale.files.run import (
    EPOCH_COLUMNS,
    BatchRecord,
    BestEpoch,
    EngineRecord,
    HoldoutEvaluation,
    RunRecord,
    RuntimeRecord,
    TimingRecord,
    WorldRecord,
)
from benscale.files.study import Point, StudyConfig, StudyDocument, StudyMachine, Variant
from benscale.provenance import GitState, MachineInfo, Provenance
from benscale.report.load import load_study
from benscale.report.references import bounds, evaluate, load_reference
from benscale.report.tables import runs_table, scaling_table
from conftest import skip_unless_ci

REPO = Path(__file__).resolve().parents[1]

#: (mode, nodes, repeat) -> (epoch times, samples/s per epoch, test macro mAP)
RUNS: dict[tuple[str, int, int], tuple[list[float], list[float], float]] = {
    ("strong", 1, 0): ([10.0, 4.0, 4.0], [50.0, 64.0, 64.0], 0.50),
    ("strong", 1, 1): ([10.0, 4.0, 6.0], [50.0, 64.0, 48.0], 0.52),
    ("strong", 2, 0): ([9.0, 3.0, 3.0], [50.0, 80.0, 80.0], 0.51),
    ("strong", 2, 1): ([9.0, 2.0, 2.0], [50.0, 120.0, 120.0], 0.49),
    ("weak", 1, 0): ([8.0, 5.0, 5.0], [60.0, 100.0, 100.0], 0.40),
    ("weak", 2, 0): ([8.0, 5.5, 5.5], [90.0, 180.0, 180.0], 0.41),
}
VAL_MAP = [0.2, 0.5, 0.6]
VAL_F1_MACRO = [0.2, 0.4, 0.3]  # best at epoch 2, unlike the mAP
GPN = 2


def _point(mode: str, nodes: int, repeat: int, variant: str = "default") -> Point:
    world = nodes * GPN
    gb = 32 if mode == "strong" else 16 * world
    name = f"{variant}/{mode}-n{nodes}-r{repeat}"
    return Point(name, variant, mode, nodes, GPN, repeat, world, gb, gb // world,
                 f"runs/{name}", f"logs/train/{name}.log")


def _record(point: Point, status: str, test_map: float) -> RunRecord:
    """A run.json as benscale train writes it, with known values."""
    prov = Provenance(date_utc="2026-01-01T00:00:00+00:00", git=GitState("abc123", False),
                      packages={"torch": "2.14.1"},
                      machine=MachineInfo("hostA", "Linux", "3.11", "Test CPU", 2, 8.0, ()),
                      slurm={"SLURM_JOB_ID": "4242"}, config_hash="f" * 64,
                      slurm_job_id="4242",
                      environment={"numpy": "2.4.6", "torch": "2.14.1"})
    world = WorldRecord(point.world_size, point.nodes, GPN, ("hostA",), "mpi", "gloo", "cpu",
                        True, "127.0.0.1", 29500, ("hostA",) * point.world_size)
    runtime = RuntimeRecord(threads=1, interop_threads=1, torch_threads=1, threadpools=[],
                            environment={"OMP_NUM_THREADS": "1"}, deterministic=False,
                            matmul_precision="highest", cudnn=None, parallel_info="")
    test = HoldoutEvaluation(test_map, test_map, 0.1, 0.2, 0.3, 0.3, 0.5, 40, "epoch-0003", "best")
    config = {"precision": "fp32", "engine": "deepspeed", "zero_stage": 0, "bands": "s2-12",
              "num_classes": 19, "epochs": 3, "seed": 42, "tags": {"point": point.name}}
    return RunRecord(config=config, world=world,
                     batches=BatchRecord(point.global_batch, point.batch_per_gpu, 1, 4),
                     provenance=prov, status=status, test=test if status == "ok" else None,
                     best=BestEpoch(3, 0.6), tags={"point": point.name},
                     engine=EngineRecord("deepspeed", "deepspeed", "0.19.8", {"seed": 42}),
                     timing=TimingRecord("deepspeed comms_logger", True), runtime=runtime)


def _write_run(study_dir: Path, point: Point, times: list[float],
               rates: list[float], test_map: float, status: str = "ok") -> None:
    run = study_dir / point.run_dir
    run.mkdir(parents=True)
    rows = []
    for i, (t, x) in enumerate(zip(times, rates, strict=True)):
        parts = {"data_time_s": 0.1 * t, "compute_time_s": 0.6 * t, "comm_time_s": 0.2 * t,
                 "optimizer_time_s": 0.05 * t}
        rows.append({"epoch": i + 1, "world_size": point.world_size, "nodes": point.nodes,
                     "global_batch": point.global_batch, "epoch_time_s": t, **parts,
                     "epoch_time_s_mean": t, **{f"{k}_mean": v for k, v in parts.items()},
                     "samples_per_s": x, "train_loss": 0.7 - 0.1 * i, "val_loss": 0.6,
                     "val_map_micro": VAL_MAP[i], "val_map_macro": VAL_MAP[i],
                     "val_f1_micro": 0.3, "val_f1_macro": VAL_F1_MACRO[i],
                     "val_precision_micro": 0.3,
                     "val_recall_micro": 0.3, "lr": 0.1, "steps": 4,
                     "samples": 4 * point.global_batch})
    pd.DataFrame(rows, columns=EPOCH_COLUMNS).to_csv(run / "epochs.csv", index=False)
    (run / "per_class_ap.csv").write_text("epoch,class,ap\n1,Urban fabric,0.5\n")
    (run / "mllog.jsonl").write_text('{"key": "run_start"}\n')
    _record(point, status, test_map).write(run)


def make_study(root: Path, failed: bool = True) -> Path:
    """A study folder with the RUNS above, one point never started and one failed."""
    study_dir = root / "results" / "hand"
    points = []
    for (mode, nodes, repeat), (times, rates, test_map) in RUNS.items():
        p = _point(mode, nodes, repeat)
        _write_run(study_dir, p, times, rates, test_map)
        points.append(p)
    if failed:
        missing = _point("strong", 4, 0)
        points.append(missing)
        crashed = _point("weak", 4, 0)
        _write_run(study_dir, crashed, [8.0], [150.0], 0.0, status="failed")
        points.append(crashed)
        log = study_dir / crashed.log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("starting\nRuntimeError: rank 3 died (simulated)\n")
    _document("hand", points).write(study_dir / "study.json")
    return study_dir / "study.json"


def _document(name: str, points: list[Point]) -> StudyDocument:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["study"]["name"] = name
    machine = StudyMachine("local-cpu", "hand-made test machine", "mpiexec", "hostA",
                           "Test CPU", GitState("abc123", False), {"torch": "2.14.1"})
    return StudyDocument(name, StudyConfig.from_dict(config), machine,
                         "2026-01-01T00:00:00+00:00", (Variant("default"),), tuple(points))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hand")
    study = make_study(root)
    ref = root / "ref.yaml"
    ref.write_text(
        "system: local-cpu\nchecks:\n"
        "  - {name: eff4, where: {mode: strong, world_size: 4}, metric: efficiency_median,"
        " value: 0.9, lower: -0.1, upper: 0.1}\n"
        "  - {name: eff4 strict, where: {mode: strong, world_size: 4},"
        " metric: efficiency_median, min: 0.95}\n"
        "  - {name: 96 GPUs, where: {mode: strong, world_size: 96}, metric: efficiency_median,"
        " min: 0.8}\n"
        "  - {name: test map, table: runs, where: {mode: weak, world_size: 4},"
        " metric: test_map_macro, value: 0.4, lower: -0.5, upper: 0.5}\n"
        "  - {name: failed only, table: runs, where: {mode: weak, world_size: 8},"
        " metric: test_map_macro, value: 0.4, lower: -0.5, upper: 0.5}\n")
    out = root / "report"
    assert main(["report", "--study", str(study), "--out", str(out), "--reference", str(ref),
                 "--target-map-macro", "0.5"]) == 0
    return out


def test_strong_scaling_exact(report: Path) -> None:
    sc = pd.read_csv(report / "scaling.csv")
    strong = sc[sc["mode"] == "strong"].set_index("world_size")
    # baseline T0 = median(4, 5) = 4.5 at W0 = 2; runs at W = 4 take 3 and 2 s
    assert strong.loc[2, "epoch_time_s_median"] == 4.5
    assert strong.loc[4, "speedup_min"] == 1.5
    assert strong.loc[4, "speedup_max"] == 2.25
    assert strong.loc[4, "speedup_median"] == 1.875
    assert strong.loc[4, "efficiency_min"] == 0.75
    assert strong.loc[4, "efficiency_max"] == 1.125
    assert strong.loc[4, "efficiency_median"] == 0.9375
    # the baseline's own repeats spread around 1: 4.5/4 = 1.125 and 4.5/5 = 0.9
    assert strong.loc[2, "efficiency_median"] == pytest.approx(1.0125, rel=1e-15)
    assert strong.loc[4, "runs"] == 2


def test_weak_scaling_is_throughput_ratio(report: Path) -> None:
    sc = pd.read_csv(report / "scaling.csv")
    weak = sc[sc["mode"] == "weak"].set_index("world_size")
    assert weak.loc[4, "speedup_median"] == 1.8          # 180 / 100
    assert weak.loc[4, "efficiency_median"] == 0.9       # 180 * 2 / (100 * 4)
    assert weak.loc[4, "test_map_macro_change"] == pytest.approx(0.01)


def test_runs_table(report: Path) -> None:
    runs = pd.read_csv(report / "runs.csv").set_index("point")
    r = runs.loc["default/strong-n1-r1"]
    assert r["first_epoch_time_s"] == 10.0
    assert r["epoch_time_s_median"] == 5.0 and r["epoch_time_s_mean"] == 5.0
    assert r["samples_per_s"] == 56.0
    assert r["best_val_map_macro"] == 0.6 and r["best_epoch"] == 3
    assert r["best_val_f1_macro"] == 0.4 and r["final_val_f1_macro"] == 0.3
    assert r["final_val_map_macro"] == 0.6 and r["test_checkpoint"] == "epoch-0003"
    assert r["time_to_target_s"] == 14.0                  # epochs 1 + 2 reach 0.5
    assert r["test_map_macro"] == 0.52
    assert r["compute_time_s"] == pytest.approx(0.6 * 5.0)
    assert r["slurm_job_id"] == 4242 and r["git_commit"] == "abc123"
    assert r["hosts"] == "hostA" and r["backend"] == "gloo"
    assert r["precision"] == "fp32" and r["zero_stage"] == 0
    assert (runs["status"] == "ok").sum() == 6


def test_missing_and_failed_points_listed(report: Path) -> None:
    runs = pd.read_csv(report / "runs.csv").set_index("point")
    assert runs.loc["default/strong-n4-r0", "status"] == "failed"
    assert "no run directory" in runs.loc["default/strong-n4-r0", "reason"]
    assert runs.loc["default/weak-n4-r0", "status"] == "failed"
    assert "'failed'" in runs.loc["default/weak-n4-r0", "reason"]
    html = (report / "index.html").read_text()
    assert "strong-n4-r0" in html and "rank 3 died (simulated)" in html
    # failed points never enter the scaling table
    sc = pd.read_csv(report / "scaling.csv")
    assert set(sc["world_size"]) == {2, 4}
    summary = json.loads((report / "report.json").read_text())
    assert sorted(summary["failed"]) == ["default/strong-n4-r0", "default/weak-n4-r0"]


def test_epochs_tidy(report: Path) -> None:
    ep = pd.read_csv(report / "epochs.csv")
    pq = pd.read_parquet(report / "epochs.parquet")
    assert len(ep) == len(pq) == 6 * 3 + 1                # the failed run's epoch is kept
    assert {"point", "mode", "repeat", "config_hash", "git_commit", "warmup"} <= set(ep)
    assert ep.groupby("point")["epoch"].count().loc["default/strong-n2-r1"] == 3
    # the page carries the same table: every epoch row of every run, in its mode's section
    tables = (report / "index.html").read_text().split("<table")[1:]
    per_epoch = [t for t in tables if "<th>epoch</th>" in t and "<th>compute_time_s</th>" in t]
    assert len(per_epoch) == 2  # strong and weak
    assert sum(t.count("<tr>") for t in per_epoch) == len(ep)  # body rows (header: <tr style)


def test_figures_are_images(report: Path) -> None:
    expected = {"epoch_time", "speedup", "efficiency", "throughput", "accuracy",
                "time_to_accuracy", "breakdown"}
    for key in expected:
        png, svg = report / "figures" / f"{key}.png", report / "figures" / f"{key}.svg"
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            # not a blank canvas
            assert len(im.convert("L").getcolors(maxcolors=1 << 16) or []) > 10
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    html = (report / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(expected)


def test_references_marked(report: Path) -> None:
    refs = pd.read_csv(report / "references.csv").set_index("name")
    assert refs.loc["eff4", "state"] == "within"          # 0.9375 in [0.81, 0.99]
    assert refs.loc["eff4 strict", "state"] == "outside"  # 0.9375 < 0.95
    assert refs.loc["96 GPUs", "state"] == "not measured"
    assert refs.loc["test map", "state"] == "within"      # 0.41 in [0.2, 0.6]
    assert refs.loc["failed only", "state"] == "not measured"  # failed runs do not count
    assert "outside" in (report / "index.html").read_text()


def test_bounds_relative_and_absolute() -> None:
    assert bounds({"value": 2.0, "lower": -0.25, "upper": 0.5}) == (1.5, 3.0)
    assert bounds({"value": -2.0, "lower": -0.5}) == (-3.0, None)
    assert bounds({"value": 1.0, "min": 0.2, "lower": -0.9}) == (0.2, None)
    doc = {"system": "x", "checks": [{"name": "a", "metric": "m", "value": 1.0,
                                      "upper": 0.0}]}
    table = pd.DataFrame({"m": [1.5]})
    (res,) = evaluate(doc, {"scaling": table}, "y")
    assert res.state == "outside" and "reference for x" in res.note


def test_bundle(report: Path) -> None:
    b = report / "bundle"
    manifest = json.loads((b / "MANIFEST.json").read_text())
    assert (b / "study.json").is_file() and (b / "config.yaml").is_file()
    assert (b / "runs" / "default" / "strong-n1-r0" / "epochs.csv").is_file()
    assert (b / "logs" / "train" / "default" / "weak-n4-r0.log").is_file()
    # the package set the runs recorded, pip-freeze style, instead of the project's lock
    assert (b / "environment.txt").read_text().splitlines() == ["numpy==2.4.6", "torch==2.14.1"]
    assert manifest["environment_recorded"] and not (b / "requirements.lock").exists()
    assert "runs/default/strong-n1-r0/run.json" in manifest["files"]
    # the bundle is itself a study the report reads, with the same numbers
    again = load_study(b / "study.json")
    assert [r.status for r in again.runs].count("ok") == 6
    scaling = scaling_table(runs_table(again, 0.5))
    assert scaling["efficiency_median"].tolist() == pd.read_csv(
        report / "scaling.csv")["efficiency_median"].tolist()


def test_perfmodel_section(report: Path) -> None:
    m = pd.read_csv(report / "perfmodel_measured.csv")
    assert len(m) == 6 and (m["predicted_epoch_time_s"] > 0).all()
    pred = pd.read_csv(report / "perfmodel_prediction.csv")
    assert pred["world_size"].max() == 128
    assert {"local-cpu", "juwels-booster"} <= set(pred["system"])
    assert not math.isnan(pred["efficiency"].iloc[0])
    assert "Assumptions" in (report / "index.html").read_text()


def test_all_failed_study(tmp_path: Path) -> None:
    study_dir = tmp_path / "s"
    (study_dir).mkdir()
    _document("dead", [_point("strong", 1, 0)]).write(study_dir / "study.json")
    assert main(["report", "--study", str(study_dir / "study.json"),
                 "--out", str(tmp_path / "r")]) == 0
    assert "no run directory" in (tmp_path / "r" / "index.html").read_text()


def test_bad_inputs(tmp_path: Path) -> None:
    assert main(["report", "--study", str(tmp_path / "nope.json"),
                 "--out", str(tmp_path / "r")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - {name: x}\n")
    with pytest.raises(ConfigError, match="needs 'metric'"):
        load_reference(bad)


def test_packaged_references_parse() -> None:
    for name in ("sedona2019-juwels", "local-cpu-demo"):
        doc = load_reference(name)
        assert doc["checks"] and doc["system"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_html_opens_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """The page loads in a real browser, without JS errors, and every figure decodes."""
    if CHROMIUM is None:
        skip_unless_ci("chromium not installed (tools/install-system-deps.sh installs it); "
                       "the HTML report cannot be opened in a real browser")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000"]
    url = (report / "index.html").resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    assert loaded and total, f"load handler did not run: {body.group(0)}"
    assert int(total.group(1)) == 7 and loaded.group(1) == total.group(1)
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert not errors, errors
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        assert len(im.convert("L").getcolors(maxcolors=1 << 16) or []) > 20
