"""benscale report on hand-made run directories with known numbers (exact checks): two
variants (deepspeed and ddp) compared per variant and at each scale, missing and failed
points, figures with one colour per variant, references, the model per variant, the reviewer
bundle; the demo's study as config/config.yaml plans it; and both pages in a real browser at
laptop width."""

from __future__ import annotations

import json
import math
import re
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
from benscale.provenance import (
    AcceleratorStack,
    GitState,
    MachineInfo,
    MpiLibrary,
    Provenance,
)
from benscale.report.load import load_study
from benscale.report.references import bounds, evaluate, load_reference
from benscale.report.tables import runs_table, scaling_table
from benscale.study.plan import plan_points, resolve_variants
from pages import WIDTH, assert_reads_at_laptop_width, open_page, screenshot, table_in, tables

REPO = Path(__file__).resolve().parents[1]

#: (variant, mode, nodes, repeat) -> (epoch times, samples/s per epoch, test macro mAP)
RUNS: dict[tuple[str, str, int, int], tuple[list[float], list[float], float]] = {
    ("deepspeed", "strong", 1, 0): ([10.0, 4.0, 4.0], [50.0, 64.0, 64.0], 0.50),
    ("deepspeed", "strong", 1, 1): ([10.0, 4.0, 6.0], [50.0, 64.0, 48.0], 0.52),
    ("deepspeed", "strong", 2, 0): ([9.0, 3.0, 3.0], [50.0, 80.0, 80.0], 0.51),
    ("deepspeed", "strong", 2, 1): ([9.0, 2.0, 2.0], [50.0, 120.0, 120.0], 0.49),
    ("deepspeed", "weak", 1, 0): ([8.0, 5.0, 5.0], [60.0, 100.0, 100.0], 0.40),
    ("deepspeed", "weak", 2, 0): ([8.0, 5.5, 5.5], [90.0, 180.0, 180.0], 0.41),
    # faster at 2 GPUs, slower at 4: the best variant changes with the scale
    ("ddp", "strong", 1, 0): ([9.0, 3.0, 3.0], [60.0, 100.0, 100.0], 0.48),
    ("ddp", "strong", 2, 0): ([8.0, 3.0, 3.0], [60.0, 100.0, 100.0], 0.47),
}
#: Per variant: validation macro mAP per epoch, and the parts of an epoch as fractions of
#: its time (ddp's sum to 1.15: 0.15 of the epoch is communication hidden behind compute).
VAL_MAP = {"deepspeed": [0.2, 0.5, 0.6], "ddp": [0.25, 0.45, 0.55]}
PARTS_OF_EPOCH = {
    "deepspeed": {"data_time_s": 0.1, "compute_time_s": 0.6, "comm_time_s": 0.2,
                  "optimizer_time_s": 0.05},
    "ddp": {"data_time_s": 0.1, "compute_time_s": 0.7, "comm_time_s": 0.3,
            "optimizer_time_s": 0.05},
}
VAL_F1_MACRO = [0.2, 0.4, 0.3]  # best at epoch 2, unlike the mAP
GPN = 2
ENGINES = {"deepspeed": (EngineRecord("deepspeed", "deepspeed", "0.19.8", {"seed": 42}),
                         TimingRecord("deepspeed comms_logger", True)),
           "ddp": (EngineRecord("ddp", "torch", "2.14.1", {"bucket_cap_mb": 25}),
                   TimingRecord("ddp comm hook", True))}


def _point(mode: str, nodes: int, repeat: int, variant: str = "deepspeed") -> Point:
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
                      environment={"numpy": "2.4.6", "torch": "2.14.1"},
                      accelerators=AcceleratorStack(torch_cuda="12.8", nccl="2.27.3"),
                      mpi=MpiLibrary("MPICH Version: 4.3.0\nMPICH Release date: x", {},
                                     "/usr/bin/mpiexec"))
    world = WorldRecord(point.world_size, point.nodes, GPN, ("hostA",), "mpi", "gloo", "cpu",
                        True, "127.0.0.1", 29500, ("hostA",) * point.world_size)
    runtime = RuntimeRecord(threads=1, interop_threads=1, torch_threads=1, threadpools=[],
                            environment={"OMP_NUM_THREADS": "1"}, deterministic=False,
                            matmul_precision="highest", cudnn=None, parallel_info="")
    test = HoldoutEvaluation(test_map, test_map, 0.1, 0.2, 0.3, 0.3, 0.5, 40, "epoch-0003", "best")
    engine, timing = ENGINES.get(point.variant, ENGINES["deepspeed"])
    config = {"precision": "fp32", "engine": engine.name, "zero_stage": 0, "bands": "s2-12",
              "num_classes": 19, "epochs": 3, "seed": 42, "tags": {"point": point.name}}
    return RunRecord(config=config, world=world,
                     batches=BatchRecord(point.global_batch, point.batch_per_gpu, 1, 4),
                     provenance=prov, status=status, test=test if status == "ok" else None,
                     best=BestEpoch(3, 0.6), tags={"point": point.name},
                     engine=engine, timing=timing, runtime=runtime)


def _write_run(study_dir: Path, point: Point, times: list[float],
               rates: list[float], test_map: float, status: str = "ok") -> None:
    run = study_dir / point.run_dir
    run.mkdir(parents=True)
    rows = []
    shares = PARTS_OF_EPOCH.get(point.variant, PARTS_OF_EPOCH["deepspeed"])
    val_map = VAL_MAP.get(point.variant, VAL_MAP["deepspeed"])
    engine = ENGINES.get(point.variant, ENGINES["deepspeed"])[0]
    for i, (t, x) in enumerate(zip(times, rates, strict=True)):
        parts = {k: f * t for k, f in shares.items()}
        rows.append({"epoch": i + 1, "world_size": point.world_size, "nodes": point.nodes,
                     "global_batch": point.global_batch, "epoch_time_s": t, **parts,
                     "epoch_time_s_mean": t, **{f"{k}_mean": v for k, v in parts.items()},
                     "samples_per_s": x, "train_loss": 0.7 - 0.1 * i, "val_loss": 0.6,
                     "val_map_micro": val_map[i], "val_map_macro": val_map[i],
                     "val_f1_micro": 0.3, "val_f1_macro": VAL_F1_MACRO[i],
                     "val_precision_micro": 0.3,
                     "val_recall_micro": 0.3, "lr": 0.1, "steps": 4,
                     "samples": 4 * point.global_batch, "engine": engine.name,
                     "engine_version": engine.version, "engine_config": "{}"})
    pd.DataFrame(rows, columns=EPOCH_COLUMNS).to_csv(run / "epochs.csv", index=False)
    (run / "per_class_ap.csv").write_text("epoch,class,ap\n1,Urban fabric,0.5\n")
    (run / "mllog.jsonl").write_text('{"key": "run_start"}\n')
    _record(point, status, test_map).write(run)


def make_study(root: Path, failed: bool = True) -> Path:
    """A study folder with the RUNS above (two variants), one point never started and one
    failed."""
    study_dir = root / "results" / "hand"
    points = []
    for (variant, mode, nodes, repeat), (times, rates, test_map) in RUNS.items():
        p = _point(mode, nodes, repeat, variant)
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
    _document("hand", points, ("deepspeed", "ddp")).write(study_dir / "study.json")
    return study_dir / "study.json"


def _document(name: str, points: list[Point], variants: tuple[str, ...] = ("default",),
              machine: str = "local-cpu") -> StudyDocument:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["study"]["name"] = name
    config["machine"]["name"] = machine
    record = StudyMachine(machine, f"hand-made test machine {machine}", "mpiexec", "hostA",
                          "Test CPU", GitState("abc123", False), {"torch": "2.14.1"})
    return StudyDocument(name, StudyConfig.from_dict(config), record,
                         "2026-01-01T00:00:00+00:00", tuple(Variant(v) for v in variants),
                         tuple(points))


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


def _svg_texts(svg: Path) -> list[str]:
    """The texts of a matplotlib SVG (it writes each as a comment before its glyphs)."""
    return re.findall(r"<!-- (.*?) -->", svg.read_text())


def _colour_pixels(png: Path, colour: str) -> int:
    """How many pixels of ``png`` are exactly ``colour`` (#rrggbb)."""
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    with Image.open(png) as im:
        return sum(n for n, c in im.convert("RGB").getcolors(maxcolors=1 << 20) if c == rgb)


def test_strong_scaling_exact(report: Path) -> None:
    sc = pd.read_csv(report / "scaling.csv")
    strong = sc[(sc["mode"] == "strong") & (sc["variant"] == "deepspeed")]
    strong = strong.set_index("world_size")
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


def test_scaling_per_variant_against_its_own_baseline(report: Path) -> None:
    sc = pd.read_csv(report / "scaling.csv")
    ddp = sc[sc["variant"] == "ddp"].set_index("world_size")
    assert list(ddp["mode"]) == ["strong", "strong"]
    # ddp: 3 s at 2 GPUs and at 4 GPUs: no speedup, efficiency 3 * 2 / (4 * 3)
    assert ddp.loc[2, "epoch_time_s_median"] == 3.0 and ddp.loc[2, "baseline_world_size"] == 2
    assert ddp.loc[4, "speedup_median"] == 1.0
    assert ddp.loc[4, "efficiency_median"] == 0.5
    # communication share: ddp's is 0.3 of the epoch, of which 0.15 is hidden
    assert ddp.loc[4, "comm_share_median"] == pytest.approx(0.3)
    assert ddp.loc[4, "exposed_comm_share_median"] == pytest.approx(0.15)
    assert ddp.loc[4, "final_val_map_macro_median"] == 0.55
    assert sorted(zip(sc["variant"], sc["mode"], sc["world_size"], strict=True)) == [
        ("ddp", "strong", 2), ("ddp", "strong", 4), ("deepspeed", "strong", 2),
        ("deepspeed", "strong", 4), ("deepspeed", "weak", 2), ("deepspeed", "weak", 4)]


def test_weak_scaling_is_throughput_ratio(report: Path) -> None:
    sc = pd.read_csv(report / "scaling.csv")
    weak = sc[sc["mode"] == "weak"].set_index("world_size")
    assert weak.loc[4, "speedup_median"] == 1.8          # 180 / 100
    assert weak.loc[4, "efficiency_median"] == 0.9       # 180 * 2 / (100 * 4)
    assert weak.loc[4, "test_map_macro_change"] == pytest.approx(0.01)


def test_best_variant_at_each_scale(report: Path) -> None:
    """One baseline for all: ddp, the fastest at 2 GPUs (3 s vs deepspeed's 4.5 s)."""
    best = pd.read_csv(report / "best_by_scale.csv")
    strong = best[best["mode"] == "strong"].set_index("world_size")
    assert strong.loc[2, "best_variant"] == "ddp" and strong.loc[4, "best_variant"] == "deepspeed"
    assert (strong["baseline_variant"] == "ddp").all()
    assert (strong["baseline_world_size"] == 2).all()
    assert strong.loc[2, "epoch_time_s"] == 3.0
    assert strong.loc[2, "runner_up"] == "deepspeed" and strong.loc[2, "runner_up_ratio"] == 1.5
    # deepspeed at 4 GPUs: median(3, 2) = 2.5 s; against ddp's 3 s at 2 GPUs
    assert strong.loc[4, "epoch_time_s"] == 2.5
    assert strong.loc[4, "speedup"] == 1.2                # 3 / 2.5
    assert strong.loc[4, "efficiency"] == 0.6             # 1.2 * 2 / 4
    assert strong.loc[4, "runner_up"] == "ddp" and strong.loc[4, "runner_up_ratio"] == 1.2
    assert strong.loc[2, "comm_share"] == pytest.approx(0.3)
    assert strong.loc[2, "exposed_comm_share"] == pytest.approx(0.15)
    assert strong.loc[4, "comm_share"] == pytest.approx(0.2)
    assert strong.loc[4, "exposed_comm_share"] == pytest.approx(0.2)
    assert strong.loc[2, "final_val_map_macro"] == 0.55
    assert strong.loc[4, "final_val_map_macro"] == 0.6
    assert strong.loc[4, "time_to_target_s"] == 11.5    # median(9 + 3, 9 + 2)
    assert (strong["variants_compared"] == 2).all()
    weak = best[best["mode"] == "weak"].set_index("world_size")
    assert weak.loc[4, "best_variant"] == "deepspeed" and weak.loc[4, "speedup"] == 1.8
    assert weak.loc[4, "efficiency"] == 0.9 and weak.loc[4, "variants_compared"] == 1
    assert weak["runner_up"].isna().all()
    assert "best_by_scale.csv" in json.loads((report / "report.json").read_text())["tables"]
    page = table_in((report / "index.html").read_text(), "Best variant at each scale")
    assert page.column("fastest variant") == ["ddp", "deepspeed", "deepspeed", "deepspeed"]
    assert page.column("efficiency [fraction of ideal]") == ["1", "0.6", "1", "0.9"]


def test_headline_first(report: Path) -> None:
    """Per variant: efficiency at the largest scale and time to target, before anything
    else on the page."""
    head = pd.read_csv(report / "headline.csv").set_index(["variant", "mode"])
    assert head.loc[("deepspeed", "strong"), "largest_world_size"] == 4
    assert head.loc[("deepspeed", "strong"), "efficiency"] == 0.9375
    assert head.loc[("deepspeed", "strong"), "time_to_target_s"] == 11.5
    assert head.loc[("deepspeed", "strong"), "vs_fastest"] == 1.0
    assert head.loc[("deepspeed", "strong"), "failed"] == 1
    assert head.loc[("ddp", "strong"), "efficiency"] == 0.5
    assert head.loc[("ddp", "strong"), "time_to_target_s"] == 14.0   # 8 + 3 + 3: epoch 3
    assert head.loc[("ddp", "strong"), "vs_fastest"] == 1.2
    assert head.loc[("deepspeed", "weak"), "efficiency"] == 0.9
    html = (report / "index.html").read_text()
    first = tables(html)[0]
    assert first.section == "Headline"
    assert first.column("variant") == ["deepspeed", "deepspeed", "ddp"]
    assert first.column("efficiency [fraction of ideal]") == ["0.9375", "0.9", "0.5"]
    assert first.column("time to target mAP [s]") == ["11.5", "13.5", "14"]
    words = " ".join(html[html.index('id="headline"'):html.index('id="figures"')].split())
    assert ("At 4 GPUs (strong scaling) <strong>deepspeed</strong> is fastest: 2.5 s per "
            "epoch; ddp takes 1.20x as long; fastest by scale: 2 GPUs ddp, 4 GPUs "
            "deepspeed.") in words
    assert "deepspeed <strong>0.9375</strong>, ddp <strong>0.5</strong>" in words
    assert "2 of 10 points failed" in words
    # headline, then the figures, then the detailed tables
    order = [html.index(f'id="{k}"') for k in ("headline", "figures", "best", "scaling",
                                                "references", "model", "failed",
                                                "provenance")]
    assert order == sorted(order)


def test_variants_described(report: Path) -> None:
    variants = pd.read_csv(report / "variants.csv").set_index("variant")
    assert list(variants.index) == ["deepspeed", "ddp"]
    assert variants.loc["ddp", "engine_version"] == "torch 2.14.1"
    assert variants.loc["ddp", "timing_method"] == "ddp comm hook"
    assert variants.loc["deepspeed", "points"] == 8 and variants.loc["deepspeed", "failed"] == 2


def test_provenance_summary(report: Path) -> None:
    """What the runs share, one line per field, the GPU software and MPI library included
    (the bundle's machine.json carries them for benscale compare)."""
    html = " ".join((report / "index.html").read_text().split())
    fields = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html))
    assert fields["machine"] == "local-cpu: hand-made test machine local-cpu"
    assert fields["git commit"] == "abc123" and fields["Slurm jobs"] == "4242"
    assert fields["GPU software"] == "CUDA (torch) 12.8, NCCL 2.27.3"
    assert fields["MPI library"] == "MPICH Version: 4.3.0"
    assert fields["engines"] == "deepspeed 0.19.8, torch 2.14.1"
    machines = json.loads((report / "bundle" / "machine.json").read_text())["runs"]
    run = machines["ddp/strong-n1-r0"]
    assert run["accelerators"]["nccl"] == "2.27.3" and run["mpi_library"] == "MPICH Version: 4.3.0"


def test_runs_table(report: Path) -> None:
    runs = pd.read_csv(report / "runs.csv").set_index("point")
    r = runs.loc["deepspeed/strong-n1-r1"]
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
    assert r["engine"] == "deepspeed" and r["engine_version"] == "0.19.8"
    assert runs.loc["ddp/strong-n1-r0", "engine"] == "ddp"
    assert (runs["status"] == "ok").sum() == 8


def test_missing_and_failed_points_listed(report: Path) -> None:
    runs = pd.read_csv(report / "runs.csv").set_index("point")
    assert runs.loc["deepspeed/strong-n4-r0", "status"] == "failed"
    assert "no run directory" in runs.loc["deepspeed/strong-n4-r0", "reason"]
    assert runs.loc["deepspeed/weak-n4-r0", "status"] == "failed"
    assert "'failed'" in runs.loc["deepspeed/weak-n4-r0", "reason"]
    html = (report / "index.html").read_text()
    assert "strong-n4-r0" in html and "rank 3 died (simulated)" in html
    # failed points never enter the scaling table
    sc = pd.read_csv(report / "scaling.csv")
    assert set(sc["world_size"]) == {2, 4}
    summary = json.loads((report / "report.json").read_text())
    assert sorted(summary["failed"]) == ["deepspeed/strong-n4-r0", "deepspeed/weak-n4-r0"]


def test_epochs_tidy(report: Path) -> None:
    ep = pd.read_csv(report / "epochs.csv")
    pq = pd.read_parquet(report / "epochs.parquet")
    assert len(ep) == len(pq) == 8 * 3 + 1                # the failed run's epoch is kept
    assert {"point", "variant", "mode", "repeat", "config_hash", "git_commit",
            "warmup"} <= set(ep)
    assert ep.groupby("point")["epoch"].count().loc["deepspeed/strong-n2-r1"] == 3
    # the page carries the same rows, in its mode's section, under unit-bearing labels
    per_epoch = [t for t in tables((report / "index.html").read_text())
                 if "epoch" in t.headers and "compute [s]" in t.headers]
    assert len(per_epoch) == 2  # strong and weak
    assert sum(len(t.rows) for t in per_epoch) == len(ep)
    assert "compute_time_s" not in per_epoch[0].headers


def test_unit_labels_and_csv_links(report: Path) -> None:
    """Tables show labels with units, never raw column names, and link the full CSV."""
    html = (report / "index.html").read_text()
    raw = {"epoch_time_s_median", "samples_per_s", "efficiency_median", "comm_share",
           "time_to_target_s", "world_size"}
    for t in tables(html):
        assert not raw & set(t.headers), (t.section, t.headers)
    runs = table_in(html, "Runs (strong)")
    assert {"epoch time [s], median", "throughput [samples/s]",
            "communication share [fraction of epoch]"} <= set(runs.headers)
    assert len(runs.headers) <= 12 < len(pd.read_csv(report / "runs.csv").columns)
    for csv in ("runs.csv", "scaling.csv", "best_by_scale.csv", "headline.csv",
                "epochs.csv", "references.csv", "perfmodel_measured.csv"):
        assert f'href="{csv}"' in html, csv
    scaling = table_in(html, "Strong scaling")
    assert scaling.column("speedup [x], median (min..max)")[1] == "1.875 (1.5..2.25)"


def test_figures_are_images(report: Path) -> None:
    expected = {"epoch_time", "speedup", "efficiency", "throughput", "accuracy",
                "time_to_accuracy", "breakdown", "model"}
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
    # headline figures first
    assert html.index('id="fig-efficiency"') < html.index('id="fig-time_to_accuracy"') \
        < html.index('id="fig-breakdown"')


def test_figures_one_series_per_variant(report: Path) -> None:
    """Colour = variant, the same in every figure; every figure names study and machine."""
    colours = json.loads((report / "report.json").read_text())["colours"]
    assert list(colours) == ["deepspeed", "ddp"]
    assert colours["deepspeed"] != colours["ddp"]
    figures = report / "figures"
    for key in ("epoch_time", "speedup", "efficiency", "throughput", "time_to_accuracy"):
        texts = _svg_texts(figures / f"{key}.svg")
        series = [t for t in texts if t.startswith(("deepspeed", "ddp"))]
        assert series == ["deepspeed, strong", "deepspeed, weak", "ddp, strong"], (key, texts)
        assert "study hand on local-cpu" in texts
    for key in ("epoch_time", "efficiency", "accuracy", "breakdown", "model",
                "time_to_accuracy"):
        for variant, colour in colours.items():
            assert _colour_pixels(figures / f"{key}.png", colour) > 50, (key, variant)
    accuracy = _svg_texts(figures / "accuracy.svg")
    assert {"deepspeed", "ddp"} <= set(accuracy)
    assert "weak, 8 GPUs" not in accuracy   # the failed run's epoch is not a curve
    breakdown = _svg_texts(figures / "breakdown.svg")
    assert {"deepspeed", "ddp", "communication"} <= set(breakdown)


def test_references_marked(report: Path) -> None:
    refs = pd.read_csv(report / "references.csv").set_index(["name", "variant"])
    # a check without a variant is held against each variant on its own
    assert refs.loc[("eff4", "deepspeed"), "state"] == "within"    # 0.9375 in [0.81, 0.99]
    assert refs.loc[("eff4", "ddp"), "state"] == "outside"         # 0.5
    assert refs.loc[("eff4", "ddp"), "where"] == "variant=ddp, mode=strong, world_size=4"
    assert refs.loc[("eff4 strict", "deepspeed"), "state"] == "outside"  # 0.9375 < 0.95
    assert refs.loc[("96 GPUs", "deepspeed"), "state"] == "not measured"
    assert refs.loc[("test map", "deepspeed"), "state"] == "within"  # 0.41 in [0.2, 0.6]
    assert refs.loc[("test map", "ddp"), "state"] == "not measured"  # ddp ran no weak point
    assert refs.loc[("failed only", "deepspeed"), "state"] == "not measured"  # failed runs
    assert len(refs) == 10
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
    # a check naming its variant is evaluated once
    two = pd.DataFrame({"variant": ["a", "b"], "m": [0.5, 1.5]})
    doc["checks"][0]["where"] = {"variant": "a"}
    (res,) = evaluate(doc, {"scaling": two}, "y")
    assert res.state == "within" and res.variant == "a"


def test_bundle(report: Path) -> None:
    b = report / "bundle"
    manifest = json.loads((b / "MANIFEST.json").read_text())
    assert (b / "study.json").is_file() and (b / "config.yaml").is_file()
    assert (b / "runs" / "deepspeed" / "strong-n1-r0" / "epochs.csv").is_file()
    assert (b / "runs" / "ddp" / "strong-n2-r0" / "run.json").is_file()
    assert (b / "logs" / "train" / "deepspeed" / "weak-n4-r0.log").is_file()
    # the package set the runs recorded, pip-freeze style, instead of the project's lock
    assert (b / "environment.txt").read_text().splitlines() == ["numpy==2.4.6", "torch==2.14.1"]
    assert manifest["environment_recorded"] and not (b / "requirements.lock").exists()
    assert "runs/deepspeed/strong-n1-r0/run.json" in manifest["files"]
    # the bundle is itself a study the report reads, with the same numbers
    again = load_study(b / "study.json")
    assert [r.status for r in again.runs].count("ok") == 8
    scaling = scaling_table(runs_table(again, 0.5))
    assert scaling["efficiency_median"].tolist() == pd.read_csv(
        report / "scaling.csv")["efficiency_median"].tolist()


def test_perfmodel_per_variant(report: Path) -> None:
    """Each variant is calibrated on its own smallest scale: the model reproduces that
    point exactly, for both variants."""
    m = pd.read_csv(report / "perfmodel_measured.csv").set_index("point")
    assert len(m) == 8 and (m["predicted_epoch_time_s"] > 0).all()
    assert list(m.columns[:1]) == ["variant"]
    assert m.loc["deepspeed/strong-n1-r0", "ratio_predicted_to_measured"] == \
        pytest.approx(1.0, rel=1e-12)
    assert m.loc["ddp/strong-n1-r0", "predicted_epoch_time_s"] == pytest.approx(3.0, rel=1e-12)
    # ddp's measured overlap (0.15 of the epoch hidden) is its own, not deepspeed's
    assert m.loc["ddp/strong-n1-r0", "predicted_comm_s"] == pytest.approx(0.45, rel=1e-9)
    pred = pd.read_csv(report / "perfmodel_prediction.csv")
    assert pred["world_size"].max() == 128
    assert {"local-cpu", "juwels-booster"} <= set(pred["system"])
    assert set(pred["variant"]) == {"deepspeed", "ddp"}
    assert set(pred[pred["variant"] == "ddp"]["mode"]) == {"strong"}
    assert not math.isnan(pred["efficiency"].iloc[0])
    text = (report / "perfmodel_assumptions.txt").read_text()
    assert "[deepspeed]" in text and "[ddp]" in text
    assert "calibrated on ddp/strong-n1-r0" in text
    html = (report / "index.html").read_text()
    assert "Assumptions of" in html


def test_all_failed_study(tmp_path: Path) -> None:
    study_dir = tmp_path / "s"
    (study_dir).mkdir()
    _document("dead", [_point("strong", 1, 0)]).write(study_dir / "study.json")
    assert main(["report", "--study", str(study_dir / "study.json"),
                 "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "index.html").read_text()
    assert "no run directory" in html and "No point completed" in html


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


# --------------------------------------------------------------------------- the demo
#: Known numbers for the demo's points: (variant, nodes) -> (epoch times, samples/s)
DEMO_RUNS: dict[tuple[str, int], tuple[list[float], list[float]]] = {
    ("deepspeed", 1): ([30.0, 20.0, 20.0], [5.0, 8.0, 8.0]),
    ("deepspeed", 2): ([50.0, 40.0, 40.0], [3.0, 4.0, 4.0]),
    ("ddp", 1): ([28.0, 16.0, 16.0], [6.0, 10.0, 10.0]),
    ("ddp", 2): ([35.0, 20.0, 20.0], [4.0, 8.0, 8.0]),
}


def make_demo_study(root: Path) -> Path:
    """The demo's study as config/config.yaml plans it (engines deepspeed and ddp at 1 and 2
    emulated nodes x 2 ranks), every run with the known numbers above."""
    config = StudyConfig.from_dict(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    points = plan_points(config)
    study_dir = root / "results" / config.study.name
    for p in points:
        times, rates = DEMO_RUNS[(p.variant, p.nodes)]
        _write_run(study_dir, p, times, rates, 0.25)
    doc = _document(config.study.name, list(points),
                    tuple(v.name for v in resolve_variants(config)))
    doc.write(study_dir / "study.json")
    return study_dir / "study.json"


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    out = root / "report"
    refs = [a for r in ("local-cpu-demo", "sedona2019-juwels") for a in ("--reference", r)]
    assert main(["report", "--study", str(make_demo_study(root)), "--out", str(out),
                 *refs]) == 0
    return out


def test_demo_report_compares_two_engines(demo_report: Path) -> None:
    """The demo compares deepspeed and ddp at 1 and 2 emulated nodes (2 and 4 ranks)."""
    summary = json.loads((demo_report / "report.json").read_text())
    assert summary["variants"] == ["deepspeed", "ddp"] and summary["failed"] == []
    sc = pd.read_csv(demo_report / "scaling.csv").set_index(["variant", "world_size"])
    assert sc.loc[("deepspeed", 4), "efficiency_median"] == 0.25   # 20 * 2 / (4 * 40)
    assert sc.loc[("ddp", 4), "efficiency_median"] == 0.4          # 16 * 2 / (4 * 20)
    best = pd.read_csv(demo_report / "best_by_scale.csv").set_index("world_size")
    assert list(best["best_variant"]) == ["ddp", "ddp"]
    assert best.loc[4, "speedup"] == 0.8                          # 16 / 20
    assert best.loc[2, "runner_up_ratio"] == 1.25                 # 20 / 16
    assert best.loc[4, "runner_up_ratio"] == 2.0                  # 40 / 20
    html = (demo_report / "index.html").read_text()
    head = table_in(html, "Headline")
    assert head.column("variant") == ["deepspeed", "ddp"]
    assert head.column("largest scale [GPUs]") == ["4", "4"]
    assert head.column("efficiency [fraction of ideal]") == ["0.25", "0.4"]
    assert ("<strong>ddp</strong> is fastest: 20 s per epoch; deepspeed takes 2.00x as long; "
            "it is the fastest at every measured scale.") in " ".join(html.split())


@pytest.mark.browser
def test_report_reads_at_laptop_width(report: Path, demo_report: Path, tmp_path: Path) -> None:
    """Both pages (the demo's and the one with failures and long reference notes) load in a
    real browser at 1280 px: every figure decodes, nothing is wider than the window, no
    table needs a scroll bar, rows stay compact, no script error."""
    for page in (report, demo_report):
        check = open_page(page / "index.html", tmp_path / "profile")
        assert_reads_at_laptop_width(check, images=8)


@pytest.mark.browser
def test_report_screenshot(demo_report: Path, tmp_path: Path) -> None:
    """The first screen a newcomer sees: the headline (with both variants' colours) and
    the first figures."""
    shot = tmp_path / "demo-report.png"
    im = screenshot(demo_report / "index.html", tmp_path / "profile", shot, 1400)
    assert im.size == (WIDTH, 1400)
    assert len(im.getcolors(maxcolors=1 << 20) or []) > 200           # text and figures
    colours = json.loads((demo_report / "report.json").read_text())["colours"]
    for colour in colours.values():                                  # swatches and lines
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert sum(n for n, c in im.getcolors(maxcolors=1 << 20) if c == rgb) > 100, colour
