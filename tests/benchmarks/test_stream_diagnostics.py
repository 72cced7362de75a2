"""benchmarks/stream_diagnostics.py on two tiny runs (B and DSCNet): every measurement is there
and within its range."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from dscnet.cli.main import main as dscnet_main

from .test_real_photos import _voc

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stream_diagnostics.py"
TINY = [
    "--config", "real_cpu", "model.backbone=small_cnn", "model.pretrained=null", "model.output_stride=8",
    "model.freeze_levels=0", "model.channels_last=false", "model.decoder=aspp", "model.seg_hidden=8",
    "model.proj_dim=8", "data.train_aug.crop_size=24", "data.sampler.groups_per_batch=2",
    "train.max_steps=4", "train.cls_warmup_steps=1", "loss.contrast_start_step=1", "optim.warmup_steps=0",
    "train.eval_every=4", "train.ckpt_every=4", "cam.par.num_iter=1", "cam.par.dilations=[1]",
    "train.health.enabled=false", "train.progress=false",
]  # fmt: skip
OFF = ["loss.pgcl.enabled=false", "loss.sgcl.enabled=false", "loss.cross.enabled=false"]


def test_gradients_memory_and_geometry_are_measured(tmp_path) -> None:
    _voc(tmp_path / "voc")
    root = f"data.root={tmp_path / 'voc'}"
    for name, extra in (("dscnet", []), ("b", OFF)):
        assert dscnet_main(["train", *TINY, root, f"experiment.work_dir={tmp_path / name}", *extra]) == 0
    spec = importlib.util.spec_from_file_location("stream_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "diag.json"
    status = module.main(["--dscnet", str(tmp_path / "dscnet"), "--b", str(tmp_path / "b"), "--batches", "2",
                          "--out", str(out), root])  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    terms = report["gradients"]["terms"]
    assert set(terms) == {"cls", "seg", "pgcl", "sgcl", "cross"}
    # L_cls is the only term that reaches the classifier; every term reaches the features.
    assert terms["cls"]["classifier"] > 0 and all(terms[t]["classifier"] == 0 for t in ("seg", "pgcl", "sgcl", "cross"))
    assert all(terms[t]["features"] > 0 and terms[t]["last_stage"] <= terms[t]["backbone"] + 1e-9 for t in terms)
    for t in ("pgcl", "sgcl"):
        assert 0 <= terms[t]["floor_log_positives"] <= terms[t]["ceiling_log_keys"]
    assert -1 <= report["gradients"]["cos_streams_vs_cls_backbone"] <= 1
    assert sum(report["memory"]["pgcl_queue"].values()) > 0
    for run in ("DSCNet", "B"):
        geo = report["geometry"][run]["features"]
        assert 0 <= geo["nearest_mean_accuracy_fg"] <= 1 and -1 <= geo["intra_class_other_image"] <= 1
    assert "pgcl_embedding" in report["geometry"]["DSCNet"] and "pgcl_embedding" not in report["geometry"]["B"]
    sys.modules.pop("stream_diagnostics", None)
