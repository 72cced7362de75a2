"""benchmarks/device_check.py --quick runs in the suite, so the GPU check cannot rot unnoticed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from . import benchmark_script


@pytest.fixture(scope="module")
def device_check():
    with benchmark_script("device_check") as module:
        yield module


@pytest.fixture
def _restore_torch_flags():
    # voc_vit runs with fast kernels (experiment.deterministic=false); leave the process as it was.
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = benchmark


def test_quick_check_runs_every_section(device_check, tmp_path, capsys, _restore_torch_flags):
    assert device_check.main(["--quick", "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    rows = {r["check"]: r for r in out["rows"]}
    assert not any(r["failed"] for r in out["rows"]), [r["note"] for r in out["rows"] if r["failed"]]
    assert {"train B", "train DSCNet", "evaluate seg, 1 scale", "evaluate pseudo labels (CAM + PAR)",
            "ONNX export (segmentation network)"} <= set(rows)  # fmt: skip
    assert any(c.startswith("evaluate seg, MS+flip") for c in rows) and any(c.startswith("predict") for c in rows)
    dscnet, base = rows["train DSCNet"], rows["train B"]
    assert dscnet["extra"]["ratio"] == pytest.approx(dscnet["ms"] / base["ms"])
    assert base["images_per_s"] == pytest.approx(4000 / base["ms"])  # batch 4
    # The CPU path of the losses: the count tests/engine/test_host_syncs.py pins.
    assert dscnet["extra"]["host_syncs"]["host_sync_counter"] == 9
    assert dscnet["extra"]["host_syncs"]["cuda_debug_mode"] is None
    assert out["environment"]["device"] == "cpu"
    table = capsys.readouterr().out
    assert "| check | precision | images/s | ms/step | max RSS (MiB) | note |" in table
    assert "DSCNet/B step" in table


def test_a_failing_section_is_reported_not_fatal(device_check):
    broken = SimpleNamespace(model=torch.nn.Linear(2, 2))  # no segment(): the export fails
    row = device_check.export_row(device_check.QUICK, broken)
    assert row.failed and row.note.startswith("FAILED: AttributeError")
    assert "FAILED: AttributeError" in device_check.table([row], torch.device("cpu"))


def test_without_cuda_the_full_check_says_so(device_check, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_check.main([]) == 2
    assert "no CUDA device here; use --quick" in capsys.readouterr().err
