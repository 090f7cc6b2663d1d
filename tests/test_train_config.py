"""Bad training configurations fail before any training, with a message naming the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benscale.cli import main
from benscale.errors import ConfigError
from benscale.files.batches import BatchSplit
from benscale.train import config
from conftest import build_dataset

FAST = ["--set", "global_batch=4", "--set", "workers=0", "--set", "progress=false"]


@pytest.fixture()
def shards(tiny_shards: Path) -> Path:
    return tiny_shards


def _fails(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    rc = main(["train", *map(str, argv)])
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_defaults_validate_and_overrides_parse_as_yaml() -> None:
    cfg = config.load(None, ["optimizer.lr=1e-3", "tags.study=s1", "limit_batches=null",
                             "step_decay.milestones=[2, 4]"])
    assert cfg.optimizer.lr == pytest.approx(1e-3)
    assert cfg.tags == {"study": "s1"} and cfg.limit_batches is None
    assert cfg.step_decay.milestones == (2, 4)
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # frozen: a config does not change after it has been checked


def test_config_file_in_repo_is_valid(repo_dir: Path) -> None:
    cfg = config.load(repo_dir / "config" / "train.yaml")
    assert cfg.num_classes == 19


def test_exactly_one_batch_mode() -> None:
    with pytest.raises(ConfigError, match="exactly one of global_batch"):
        config.load(None, ["batch_per_gpu=8"])
    cfg = config.load(None, ["global_batch=null", "batch_per_gpu=8", "grad_accumulation=2"])
    assert cfg.batches(4) == BatchSplit(64, 8, 2)


def test_unknown_key_fails_before_training(capsys: pytest.CaptureFixture[str], shards: Path,
                                           tmp_path: Path) -> None:
    err = _fails(capsys, "--data", shards, "--out", tmp_path / "run", *FAST,
                 "--set", "optimizer.learning_rate=0.1")
    assert "learning_rate" in err and "was unexpected" in err
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("epochs: 2\nepoch: 3\n")
    err = _fails(capsys, "--config", cfg_file, "--data", shards, "--out", tmp_path / "run")
    assert str(cfg_file) in err and "'epoch' was unexpected" in err
    assert not (tmp_path / "run").exists()


def test_world_size_must_divide_global_batch(capsys: pytest.CaptureFixture[str], shards: Path,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    err = _fails(capsys, "--data", shards, "--out", tmp_path / "run", *FAST)
    assert "global_batch=4 cannot be split over world size 3" in err
    assert not (tmp_path / "run").exists()


def test_missing_shards(capsys: pytest.CaptureFixture[str], shards: Path, tmp_path: Path) -> None:
    err = _fails(capsys, "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *FAST)
    assert "nowhere" in err and "benscale extract" in err
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    victim = next((copy / "validation").glob("shard-*.nc"))
    victim.unlink()
    err = _fails(capsys, "--data", copy, "--out", tmp_path / "run", *FAST)
    assert victim.name in err and "missing" in err
    assert not (tmp_path / "run").exists()


def test_stats_for_another_band_set(capsys: pytest.CaptureFixture[str], shards: Path,
                                    tmp_path: Path) -> None:
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    stats = json.loads((copy / "stats.json").read_text())
    for band in ("B01", "B09"):
        del stats["bands"][band]
    (copy / "stats.json").write_text(json.dumps(stats))
    err = _fails(capsys, "--data", copy, "--out", tmp_path / "run", *FAST)
    assert "stats.json" in err and "another band set" in err and "B01" in err
    assert not (tmp_path / "run").exists()


def test_43_classes_need_43_class_shards(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    """v2 (reBEN) publishes 19-class labels only: its shards cannot train 43 classes."""
    v2_shards = build_dataset(tmp_path / "v2", "v2", patches=40, seed=3)
    assert "classes43" not in json.loads((v2_shards / "manifest.json").read_text())
    err = _fails(capsys, "--data", v2_shards, "--out", tmp_path / "run", *FAST,
                 "--set", "num_classes=43")
    assert "num_classes=43" in err and "19-class labels only" in err


def test_channels_last_is_refused_with_the_deepspeed_engine() -> None:
    """DeepSpeed's engine broadcasts parameters viewed as bytes, which fails for
    channels_last weights in any precision (tests/test_train_engines.py shows it)."""
    for precision in ("fp32", "bf16", "bf16-deepspeed"):
        with pytest.raises(ConfigError, match="channels_last with engine deepspeed"):
            config.load(None, [f"precision={precision}", "channels_last=true"])
    assert config.load(None, ["precision=bf16", "channels_last=true",
                              "engine=ddp"]).channels_last
    with pytest.raises(ConfigError, match="precision"):
        config.load(None, ["precision=fp16"])
