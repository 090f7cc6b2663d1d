"""benscale compare on two hand-made studies from different machines (known numbers): the
combined tables, one series per study and variant in every figure, each study's provenance,
clear errors for folders that are not reports, and the page in a real browser at 1280 px."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benscale.cli import main
from pages import WIDTH, assert_reads_at_laptop_width, open_page, screenshot, table_in, tables
from test_report import RUNS, _document, _point, _write_run

#: Study B, an earlier study of one unnamed variant on another machine:
#: nodes -> (epoch times, samples/s per epoch)
EARLIER: dict[int, tuple[list[float], list[float]]] = {
    1: ([6.0, 3.0, 3.0], [20.0, 40.0, 40.0]),
    2: ([5.0, 2.0, 2.0], [30.0, 60.0, 60.0]),
    4: ([4.0, 1.25, 1.25], [40.0, 96.0, 96.0]),
}


def _report(root: Path, name: str, machine: str, points: list, variants: tuple[str, ...]) -> Path:
    study_dir = root / "results" / name
    _document(name, points, variants, machine=machine).write(study_dir / "study.json")
    out = root / f"report-{name}"
    assert main(["report", "--study", str(study_dir / "study.json"), "--out", str(out),
                 "--target-map-macro", "0.5"]) == 0
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Report folders of study A (deepspeed and ddp on machine-a) and B (one variant on
    machine-b)."""
    root = tmp_path_factory.mktemp("compare")
    a_dir = root / "results" / "engines"
    a_points = []
    for (variant, mode, nodes, repeat), (times, rates, test_map) in RUNS.items():
        if mode == "strong":
            p = _point(mode, nodes, repeat, variant)
            _write_run(a_dir, p, times, rates, test_map)
            a_points.append(p)
    a = _report(root, "engines", "machine-a", a_points, ("deepspeed", "ddp"))
    b_dir = root / "results" / "earlier"
    b_points = []
    for nodes, (times, rates) in EARLIER.items():
        p = _point("strong", nodes, 0, "default")
        _write_run(b_dir, p, times, rates, 0.45)
        b_points.append(p)
    b = _report(root, "earlier", "machine-b", b_points, ("default",))
    return a, b


@pytest.fixture(scope="module")
def compared(studies: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "compare"
    assert main(["compare", str(studies[0]), str(studies[1]), "--out", str(out)]) == 0
    return out


def test_combined_tables(compared: Path) -> None:
    sc = pd.read_csv(compared / "scaling.csv")
    assert list(sc.columns[:3]) == ["study", "machine", "series"]
    assert list(dict.fromkeys(sc["series"])) == ["engines / deepspeed", "engines / ddp",
                                                 "earlier / default"]
    by = sc.set_index(["series", "world_size"])
    # each study keeps its own numbers: A's deepspeed as in test_report, B's own baseline
    assert by.loc[("engines / deepspeed", 4), "efficiency_median"] == 0.9375
    assert by.loc[("engines / ddp", 4), "efficiency_median"] == 0.5
    assert by.loc[("earlier / default", 8), "speedup_median"] == 2.4     # 3 / 1.25
    assert by.loc[("earlier / default", 8), "efficiency_median"] == 0.6  # 3 * 2 / (8 * 1.25)
    assert by.loc[("earlier / default", 8), "machine"] == "machine-b"
    runs = pd.read_csv(compared / "runs.csv")
    assert sorted(set(runs["study"])) == ["earlier", "engines"] and len(runs) == 9
    head = pd.read_csv(compared / "headline.csv").set_index("series")
    assert head.loc["earlier / default", "largest_world_size"] == 8
    assert head.loc["earlier / default", "samples_per_s"] == 96.0
    assert head.loc["engines / ddp", "vs_fastest"] == 1.2
    studies = pd.read_csv(compared / "studies.csv").set_index("label")
    assert studies.loc["engines", "machine"] == "machine-a"
    assert studies.loc["earlier", "machine"] == "machine-b"
    assert studies.loc["engines", "variants"] == "deepspeed, ddp"
    assert studies.loc["earlier", "points"] == 3 and studies.loc["earlier", "failed"] == 0


def test_compare_json(compared: Path, studies: tuple[Path, Path]) -> None:
    summary = json.loads((compared / "compare.json").read_text())
    assert [s["label"] for s in summary["studies"]] == ["engines", "earlier"]
    assert [s["machine"] for s in summary["studies"]] == ["machine-a", "machine-b"]
    assert summary["studies"][0]["report_dir"] == str(studies[0].resolve())
    assert len(set(summary["colours"].values())) == 3
    for name in summary["figures"]:
        assert (compared / name).stat().st_size > 5000
    assert summary["comparability"] == []   # same batches, epochs, precision, data, target


def test_figures_overlay_every_series(compared: Path) -> None:
    colours = json.loads((compared / "compare.json").read_text())["colours"]
    for key in ("epoch_time", "speedup", "efficiency", "throughput", "time_to_accuracy"):
        svg = (compared / "figures" / f"{key}.svg").read_text()
        texts = re.findall(r"<!-- (.*?) -->", svg)
        assert [t for t in texts if " / " in t and not t.startswith("study")] == [
            "engines / deepspeed", "engines / ddp", "earlier / default"], (key, texts)
        assert "study engines vs earlier on machine-a / machine-b" in texts
        for series, colour in colours.items():
            assert f"stroke: {colour}" in svg, (key, series)


def test_page_shows_both_studies(compared: Path, studies: tuple[Path, Path]) -> None:
    html = (compared / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    first = tables(html)[0]
    assert first.section == "At a glance"
    assert first.column("study / variant") == ["engines / deepspeed", "engines / ddp",
                                               "earlier / default"]
    assert first.column("machine") == ["machine-a", "machine-a", "machine-b"]
    words = " ".join(html.split())
    # 4 GPUs is the largest count both studies measured; B's 2 s beats A's 2.5 and 3 s
    assert ("At 4 GPUs (strong), the largest scale every study measured, <strong>earlier / "
            "default</strong> is fastest: 2 s per epoch; engines / deepspeed 1.25x as long; "
            "engines / ddp 1.50x as long.") in words
    epochs = table_in(html, "Epoch time [s] per line")
    assert epochs.headers == ["study / variant", "mode", "2 GPUs", "4 GPUs", "8 GPUs"]
    assert epochs.rows[2] == ["earlier / default", "strong", "3", "2", "1.25"]
    prov = table_in(html, "Studies and provenance")
    assert prov.headers == ["field", "engines", "earlier"]
    rows = {r[0]: r[1:] for r in prov.rows}
    assert rows["machine"] == ["machine-a", "machine-b"]
    assert rows["machine description"] == ["hand-made test machine machine-a",
                                           "hand-made test machine machine-b"]
    assert rows["git commit"] == ["abc123", "abc123"] and rows["hosts"] == ["hostA", "hostA"]
    assert rows["cpu"] == ["Test CPU (2 cores)"] * 2
    assert rows["gpu software"] == ["CUDA (torch) 12.8, NCCL 2.27.3"] * 2
    assert rows["mpi library"] == ["MPICH Version: 4.3.0"] * 2
    assert rows["run dates utc"][0].startswith("2026-01-01")
    assert '<tr class="diff"><td class="txt">machine</td>' in html
    # each study's own report, linked relative to the page: the links resolve
    links = re.findall(r'href="([^"]*index\.html)"', html)
    assert [(compared / link).resolve() for link in links] == [
        (s / "index.html").resolve() for s in studies]


def test_same_study_names_get_machine_labels(studies: tuple[Path, Path], tmp_path: Path) -> None:
    """Two reports of the same study name (one study on two machines) stay apart."""
    copy = tmp_path / "again"
    shutil.copytree(studies[0], copy)
    summary = json.loads((copy / "report.json").read_text())
    summary["machine"] = "machine-c"
    (copy / "report.json").write_text(json.dumps(summary))
    out = tmp_path / "cmp"
    assert main(["compare", str(studies[0]), str(copy), "--out", str(out)]) == 0
    labels = [s["label"] for s in json.loads((out / "compare.json").read_text())["studies"]]
    assert labels == ["engines@machine-a", "engines@machine-c"]
    assert main(["compare", str(studies[0]), str(copy), "--out", str(tmp_path / "c2"),
                 "--label", "before", "--label", "after"]) == 0
    series = pd.read_csv(tmp_path / "c2" / "scaling.csv")["series"]
    assert list(dict.fromkeys(series)) == ["before / deepspeed", "before / ddp",
                                           "after / deepspeed", "after / ddp"]


def test_report_of_an_earlier_benscale(studies: tuple[Path, Path], tmp_path: Path) -> None:
    """A report written before variants (no variant column, no headline.csv) reads as one
    variant, ``default``."""
    old = tmp_path / "old"
    shutil.copytree(studies[1], old)
    for name in ("runs.csv", "scaling.csv"):
        df = pd.read_csv(old / name)
        df.drop(columns=["variant", "final_val_map_macro_median"], errors="ignore").to_csv(
            old / name, index=False)
    (old / "headline.csv").unlink()
    shutil.rmtree(old / "bundle")
    out = tmp_path / "cmp"
    assert main(["compare", str(studies[0]), str(old), "--out", str(out),
                 "--label", "new", "--label", "old"]) == 0
    head = pd.read_csv(out / "headline.csv").set_index("series")
    assert head.loc["old / default", "efficiency"] == 0.6
    assert "(no bundle/study.json)" in (out / "index.html").read_text()


def test_not_a_report(studies: tuple[Path, Path], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(studies[0]), str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: not a benscale report folder (no report.json, runs.csv, scaling.csv)" \
        in err
    assert main(["compare", str(studies[0]), str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "nope: not a benscale report folder (no such folder)" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(studies[1], bad)
    (bad / "report.json").write_text("[1, 2]")
    assert main(["compare", str(studies[0]), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}: not a benscale report (report.json has no 'study'" in \
        capsys.readouterr().err
    assert main(["compare", str(studies[0]), str(studies[1]), "--out", str(tmp_path / "o"),
                 "--label", "one"]) == 2
    assert "--label given 1 times for 2 report folders" in capsys.readouterr().err
    assert main(["compare", str(studies[0]), "--out", str(tmp_path / "o")]) == 2
    assert "two or more report folders" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_studies_without_completed_points(studies: tuple[Path, Path], tmp_path: Path) -> None:
    """A study whose every point failed is listed (and its failures counted), not a crash;
    two such studies give a page without figures."""
    study_dir = tmp_path / "dead"
    study_dir.mkdir()
    _document("dead", [_point("strong", 1, 0)], machine="machine-d").write(
        study_dir / "study.json")
    dead = tmp_path / "dead-report"
    assert main(["report", "--study", str(study_dir / "study.json"), "--out", str(dead)]) == 0
    assert main(["compare", str(studies[1]), str(dead), "--out", str(tmp_path / "c")]) == 0
    prov = pd.read_csv(tmp_path / "c" / "studies.csv").set_index("label")
    assert prov.loc["dead", "failed"] == 1 and prov.loc["dead", "machine"] == "machine-d"
    assert set(pd.read_csv(tmp_path / "c" / "scaling.csv")["study"]) == {"earlier"}
    assert main(["compare", str(dead), str(dead), "--out", str(tmp_path / "c2"),
                 "--label", "a", "--label", "b"]) == 0
    assert "No figures: no study has a completed point." in \
        (tmp_path / "c2" / "index.html").read_text()


@pytest.mark.browser
def test_compare_page_in_browser(compared: Path, tmp_path: Path) -> None:
    """At 1280 px: every figure decodes, nothing wider than the window, no table needing a
    scroll bar, no script error; the first screen shows every series' colour."""
    check = open_page(compared / "index.html", tmp_path / "profile")
    assert_reads_at_laptop_width(check, images=5)
    im = screenshot(compared / "index.html", tmp_path / "profile", tmp_path / "cmp.png", 1200)
    assert im.size == (WIDTH, 1200)
    colours = json.loads((compared / "compare.json").read_text())["colours"]
    counts = {c: n for n, c in im.getcolors(maxcolors=1 << 20)}
    for colour in colours.values():
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 100, colour
