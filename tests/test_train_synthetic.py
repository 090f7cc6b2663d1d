"""``benscale.train.synthetic.measure``, the benchmark entry, at world size 2 under torchrun.

Real gloo processes and the real engine on in-memory tensors: both ranks must report the
same (rank-reduced) figures, the throughput must follow from the global batch and the
epoch time, and at world size 2 gradient communication must have been measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import launcher_env

from benscale.train.world import free_port

BIN = Path(sys.executable).parent
SCRIPT = """
import json, sys
from benscale.train.synthetic import measure
result = measure(["global_batch=4", "warmup_epochs=0", "threads=1"], steps=2, warmup_steps=1)
rank = result["world"]["rank"]
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as fh:
    json.dump({k: v for k, v in result.items() if k != "deepspeed_config"}, fh)
"""


@pytest.mark.timeout(300)
def test_measure_reports_rank_reduced_phases_at_world_size_2(tmp_path: Path) -> None:
    script = tmp_path / "measure.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2",
                           f"--master_port={free_port()}", str(script), str(tmp_path)],
                          env=launcher_env(), capture_output=True, text=True, timeout=280,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    del first["world"], second["world"]  # rank-specific; the figures are not
    assert first == second
    assert first["batches"]["per_rank"] == 2 and first["steps"] == 2
    assert first["samples_per_s"] == pytest.approx(2 * 4 / first["epoch_time_s"])
    assert first["compute_time_s"] > 0 and first["comm_time_s"] > 0
    assert first["epoch_time_s"] >= first["epoch_time_s_mean"] > 0  # max over ranks >= mean
