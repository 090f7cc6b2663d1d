"""The performance model on synthetic inputs whose answers are computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from benscale.errors import ConfigError
from benscale.report import perfmodel
from benscale.report.perfmodel import Link, System, Workload


def _system(**kw: object) -> System:
    base = {"name": "toy", "description": "toy", "gpus_per_node": 4,
            "intra": Link(100e9, 0.0), "inter": Link(10e9, 0.0)}
    return System(**{**base, **kw})  # type: ignore[arg-type]


def test_ring_time_hand_computed() -> None:
    # 2 (p-1)/p * S / B + 2 (p-1) l = 2*3/4 * 1e8/1e10 + 6 * 1e-6
    assert Link(10e9, 1e-6).ring_time(100e6, 4) == pytest.approx(0.015006, rel=1e-12)
    assert Link(10e9, 1e-6).ring_time(100e6, 1) == 0.0


def test_hierarchical_allreduce() -> None:
    # intra: 2*3/4 * 1e8 / 1e11 = 1.5e-3 s; inter (per node): 2*1/2 * 1e8 / 1e10 = 1e-2 s
    assert perfmodel.allreduce_time(100e6, 2, 4, _system()) == pytest.approx(0.0115, rel=1e-12)
    # one node: the flat ring inside it
    assert perfmodel.allreduce_time(100e6, 1, 4, _system()) == pytest.approx(1.5e-3, rel=1e-12)
    # one GPU per node: the flat ring over the network
    assert perfmodel.allreduce_time(100e6, 4, 1, _system()) == pytest.approx(0.015, rel=1e-12)


def test_predict_step_terms() -> None:
    work = Workload(compute_s_per_sample=0.01, data_s_per_sample=0.001,
                    optimizer_s_per_step=0.02, grad_bytes=100e6, overlap=0.5)
    p = perfmodel.predict(_system(), work, nodes=2, batch_per_gpu=32, steps=100)
    assert p.world_size == 8
    assert p.compute_s == pytest.approx(0.32)
    assert p.data_s == pytest.approx(0.032)
    assert p.comm_s == pytest.approx(0.0115)
    assert p.exposed_comm_s == pytest.approx(0.00575)      # half hidden behind compute
    assert p.step_s == pytest.approx(0.37775)
    assert p.epoch_time_s == pytest.approx(37.775)
    assert p.samples_per_s == pytest.approx(100 * 32 * 8 / 37.775)


def test_overlap_cannot_hide_more_than_compute() -> None:
    work = Workload(compute_s_per_sample=1e-6, grad_bytes=100e6, overlap=1.0)
    p = perfmodel.predict(_system(), work, nodes=2, batch_per_gpu=1, steps=1)
    assert p.exposed_comm_s == pytest.approx(0.0115 - 1e-6)


def test_single_rank_has_no_communication() -> None:
    work = Workload(compute_s_per_sample=0.01, grad_bytes=100e6)
    p = perfmodel.predict(_system(gpus_per_node=1), work, nodes=1, batch_per_gpu=10, steps=3)
    assert p.comm_s == 0.0 and p.epoch_time_s == pytest.approx(0.3)


def test_input_bound_node() -> None:
    work = Workload(compute_s_per_sample=0.001, grad_bytes=0.0)
    p = perfmodel.predict(_system(data_rate_per_node_sps=100.0), work, 1, 32, 1)
    assert p.step_s == pytest.approx(32 * 4 / 100.0) and "input-bound" in p.notes[0]


def test_shared_host_slowdown() -> None:
    work = Workload(compute_s_per_sample=0.01, measured_world=2, threads_per_rank=1)
    sys2 = _system(host_cores=2)
    assert perfmodel.host_slowdown(4, work, sys2) == 2.0
    assert perfmodel.host_slowdown(1, work, sys2) == 1.0
    assert perfmodel.host_slowdown(64, work, _system()) == 1.0   # real nodes: no sharing


def test_calibrate_fits_bandwidth() -> None:
    work = Workload(compute_s_per_sample=0.01, grad_bytes=1e8)
    fitted = perfmodel.calibrate(_system(gpus_per_node=2), work, 1, 2, 0.1)
    # volume 2 * 1/2 * 1e8 = 1e8 bytes in 0.1 s
    assert fitted.intra.bandwidth_bytes_per_s == pytest.approx(1e9)
    assert perfmodel.allreduce_time(1e8, 1, 2, fitted) == pytest.approx(0.1)


def test_scan_strong_stops_below_one_sample() -> None:
    work = Workload(compute_s_per_sample=0.01, grad_bytes=1e8)
    preds = perfmodel.scan(_system(), work, "strong", 64, 6400, max_gpus=128)
    assert [p.world_size for p in preds] == [4, 8, 16, 32, 64]
    assert [p.steps for p in preds] == [100] * 5
    weak = perfmodel.scan(_system(), work, "weak", 16, 6400, max_gpus=128)
    assert [p.world_size for p in weak] == [4, 8, 16, 32, 64, 128]
    assert weak[-1].batch_per_gpu == 16 and weak[-1].steps == 6400 // (16 * 128)


def test_packaged_systems() -> None:
    systems = perfmodel.load_systems()
    assert {"juwels-booster", "juwels-cluster-v100", "dgx-a100", "local-cpu"} <= set(systems)
    assert systems["juwels-booster"].gpus_per_node == 4
    with pytest.raises(ConfigError, match="unknown system"):
        perfmodel.get_system("no-such-machine")


def test_nvidia_dgx_a100_comm_alone_is_not_the_gap() -> None:
    """docs/perfmodel.md: NVIDIA publishes 938 -> 7248 img/s (TF32, 1 -> 8 A100, 96.5 %);
    the all-reduce of 102 MB over NVSwitch alone would allow > 99 %."""
    work = Workload(compute_s_per_sample=1 / 938, grad_bytes=25_557_032 * 4)
    sys_ = perfmodel.get_system("dgx-a100")
    one = perfmodel.predict(sys_, work, 1, 256, 100, gpus_per_node=1)
    eight = perfmodel.predict(sys_, work, 1, 256, 100)
    eff = eight.samples_per_s / (8 * one.samples_per_s)
    assert 0.99 < eff < 1.0


@pytest.mark.parametrize(("system", "x1", "x8", "batch", "allreduce_ms", "model_eff"), [
    ("dgx-a100", 938, 7248, 256, 0.89, 0.997),    # TF32
    ("dgx-a100", 2470, 16621, 256, 0.89, 0.991),  # AMP
    ("dgx1-v100", 367, 2855, 112, 1.60, 0.995),   # FP32
    ("dgx1-v100", 1200, 8322, 256, 1.60, 0.993),  # AMP
])
def test_nvidia_table_in_the_docs(system: str, x1: int, x8: int, batch: int,
                                  allreduce_ms: float, model_eff: float) -> None:
    """Every row of docs/perfmodel.md's NVIDIA table, recomputed: the model's all-reduce
    time and 8-GPU efficiency, and that it over-predicts the published efficiency."""
    work = Workload(compute_s_per_sample=1 / x1, grad_bytes=25_557_032 * 4)
    sys_ = perfmodel.get_system(system)
    assert perfmodel.allreduce_time(work.grad_bytes, 1, 8, sys_) * 1e3 == \
        pytest.approx(allreduce_ms, abs=0.005)
    one = perfmodel.predict(sys_, work, 1, batch, 100, gpus_per_node=1)
    eight = perfmodel.predict(sys_, work, 1, batch, 100)
    eff = eight.samples_per_s / (8 * one.samples_per_s)
    assert eff == pytest.approx(model_eff, abs=0.0005)
    assert eff > x8 / (8 * x1)  # communication alone does not explain NVIDIA's losses


def test_measured_compute_of_a_system_replaces_the_study_workload(tmp_path: Path) -> None:
    """A system file written by `python -m bench gpu` carries the GPU's measured step time per
    sample; predictions for that system use it instead of the study's own (CPU) terms."""
    path = tmp_path / "systems.yaml"
    path.write_text("systems:\n  measured-h100:\n    description: 4x H100\n"
                    "    gpus_per_node: 4\n    intra: {bandwidth_GBps: 230, latency_us: 8}\n"
                    "    inter: {bandwidth_GBps: 80, latency_us: 10}\n"
                    "    compute_s_per_sample: {fp32: 0.002, bf16: 0.0008}\n")
    system = perfmodel.get_system("measured-h100", str(path))
    assert system.compute_s_per_sample == {"fp32": 0.002, "bf16": 0.0008}
    study_work = Workload(compute_s_per_sample=0.1, data_s_per_sample=0.01,
                          optimizer_s_per_step=0.5, other_s_per_step=0.2)
    work, note = perfmodel.workload_on(system, study_work, "bf16")
    assert (work.compute_s_per_sample, work.optimizer_s_per_step, work.data_s_per_sample) == \
        (0.0008, 0.0, 0.0)
    assert "0.800 ms per sample measured on its GPU" in note
    one = perfmodel.predict(system, work, nodes=1, batch_per_gpu=256, steps=10)
    assert one.compute_s == pytest.approx(256 * 0.0008, rel=1e-12)
    assert perfmodel.workload_on(system, study_work, "bf16-deepspeed") == (study_work, None)
