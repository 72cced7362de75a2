from pathlib import Path

import pytest

from dscnet.config import apply_overrides, load_config, resolve_config_path, save_config
from dscnet.errors import ConfigError


def test_packaged_config_by_name_inherits_base():
    cfg = load_config("synth_cpu")
    assert cfg.model.backbone == "small_cnn"
    # from base.yaml, not repeated in synth_cpu.yaml
    assert list(cfg.cam.par.dilations) == [1, 2, 4, 8, 12, 24]
    assert cfg.cam.bg_threshold == pytest.approx(0.40)  # synth_cpu's own, tuned on B
    assert cfg.cam.par.num_iter == 10  # from base.yaml
    assert resolve_config_path("synth_cpu.yaml") == resolve_config_path("synth_cpu")


def test_chained_bases_and_interpolation():
    cfg = load_config("coco_resnet")
    assert cfg.data.type == "coco"  # from coco_vit
    assert cfg.train.amp == "bf16"  # from voc_vit
    assert cfg.model.backbone == "resnet101"
    assert cfg.experiment.work_dir == "runs/coco_resnet101"


def test_overrides_apply_and_typos_fail():
    cfg = load_config("synth_cpu", ["train.max_steps=7", "cam.par.dilations=[1,3]"])
    assert cfg.train.max_steps == 7
    assert list(cfg.cam.par.dilations) == [1, 3]
    with pytest.raises(ConfigError, match="unknown config key 'train.max_step'"):
        apply_overrides(cfg, ["train.max_step=3"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(cfg, ["train.max_steps"])


def test_missing_and_circular_configs(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found: nope"):
        load_config("nope")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("_base_: b.yaml\nx: 1\n")
    b.write_text("_base_: a.yaml\ny: 2\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(a)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_config(bad)


def test_saved_config_is_resolved_and_reloadable(tmp_path: Path):
    cfg = load_config("synth_cpu", ["experiment.name=abc"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "runs/abc" in text and "${" not in text
    again = load_config(tmp_path / "config.yaml")
    assert again.experiment.work_dir == "runs/abc"


def test_stage2_config_is_real_cpu_with_the_second_stage_keys_only():
    from omegaconf import OmegaConf

    def flat(name: str) -> dict:
        cfg = OmegaConf.to_container(load_config(name), resolve=True)
        out = {}

        def walk(node, prefix=""):
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                else:
                    out[f"{prefix}{key}"] = value

        walk(cfg)
        return out

    stage1, stage2 = flat("real_cpu"), flat("real_cpu_stage2")
    changed = {k for k in stage1 if stage1[k] != stage2[k]}
    assert changed == {"experiment.name", "experiment.work_dir", "train.supervision", "train.max_steps", "data.pseudo_uncertain"}
    assert (stage2["train.supervision"], stage2["data.pseudo_uncertain"]) == ("full", "background")
