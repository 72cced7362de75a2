"""The typed config schema: base.yaml agrees with it, and every bad value is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dscnet.config import PACKAGED_CONFIG_DIR, apply_overrides, load_config, shape_changes, typed
from dscnet.config_schema import DscnetConfig, defaults, shape_keys
from dscnet.errors import ConfigError


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_base_yaml_and_the_schema_declare_the_same_keys_and_defaults():
    documented = _flatten(OmegaConf.to_container(OmegaConf.load(PACKAGED_CONFIG_DIR / "base.yaml")))
    declared = _flatten(defaults())
    assert sorted(set(documented) - set(declared)) == [], "keys in base.yaml but not in config_schema.py"
    assert sorted(set(declared) - set(documented)) == [], "keys in config_schema.py but not in base.yaml"
    differ = {k: (documented[k], declared[k]) for k in declared if documented[k] != declared[k]}
    assert differ == {}, "base.yaml default != schema default"


@pytest.mark.parametrize("name", sorted(p.stem for p in PACKAGED_CONFIG_DIR.glob("*.yaml")))
def test_every_packaged_config_is_valid_and_typed(name):
    cfg = load_config(name)
    assert OmegaConf.get_type(cfg) is DscnetConfig
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.train.max_steps, int)
    assert isinstance(cfg.eval.crf.pos_xy_std, float)  # "3" in YAML, a float by declaration


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_steps=abc", "train.max_steps='abc': must be an integer"),
        ("train.max_steps=2.5", "train.max_steps=2.5: must be an integer"),
        ("train.max_steps=-1", "train.max_steps=-1: must be >= 0"),
        ("optim.lr=-1", "optim.lr=-1.0: must be >= 0"),
        ("optim.lr=nan", "optim.lr=nan: must be a finite number"),
        ("optim.betas=[0.9]", "optim.betas=[0.9]: must have 2 entries"),
        ("data.sampler.group_size=0", "data.sampler.group_size=0: must be >= 1"),
        ("eval.batch_size=0", "eval.batch_size=0: must be >= 1"),
        ("train.log_every=0", "train.log_every=0: must be >= 1"),
        ("train.amp=fp32", "train.amp='fp32': must be one of none, bf16, fp16"),
        ("experiment.device=gpu", "experiment.device='gpu': must be auto, cpu, mps, cuda or cuda:N"),
        ("model.output_stride=12", "model.output_stride=12: must be one of 8, 14, 16, 32"),
        ("train.progress=maybe", "train.progress='maybe': must be true or false"),
        ("cam.par.dilations=[1,x]", "cam.par.dilations[1]='x': must be an integer"),
        ("train.max_steps=null", "train.max_steps=None: must be a value (it may not be null)"),
        ("cam.low=0.9", "cam.low=0.9: must not exceed cam.high"),
        ("cam.upsample=cubic", "cam.upsample='cubic': must be one of nearest, bilinear"),
        ("cam.online_scales=[1.0,0]", "cam.online_scales=[1.0, 0.0]: must be > 0"),
        ("model.decoder=unet", "model.decoder='unet': must be one of aspp, fpn"),
        ("data.train_aug.scale_range=[2,1]", "must be [low, high] with low <= high"),
        ("train.max_stepz=3", "unknown config key 'train.max_stepz'"),
    ],
)
def test_bad_values_fail_at_load_time_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("synth_cpu", [override])
    assert message in str(info.value)


def test_a_file_with_a_bad_key_or_type_is_named(tmp_path: Path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("_base_: synth_cpu\ntrain:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'train.max_step'"):
        load_config(typo)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("_base_: synth_cpu\noptim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml: optim.lr='fast': must be a number"):
        load_config(wrong)


def test_values_are_converted_to_their_declared_type():
    cfg = load_config("synth_cpu", ["optim.lr=1", "cam.bg_threshold=0", "data.root=123"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert isinstance(cfg.cam.bg_threshold, float) and cfg.data.root == "123"


def test_a_plain_config_is_typed_with_defaults_for_missing_keys():
    # E.g. the config stored in an older checkpoint: missing keys get the schema's defaults.
    cfg = typed({"train": {"max_steps": 5}}, "old.pth")
    assert OmegaConf.get_type(cfg) is DscnetConfig and cfg.train.max_steps == 5
    assert cfg.data.max_pixels is None and cfg.eval.batch_size == 8
    with pytest.raises(ConfigError, match=r"old\.pth: train.max_steps='x': must be an integer"):
        typed({"train": {"max_steps": "x"}}, "old.pth")
    # apply_overrides types a plain config before overriding it.
    plain = OmegaConf.create(OmegaConf.to_container(load_config("synth_cpu")))
    with pytest.raises(ConfigError, match="eval.batch_size=0: must be >= 1"):
        apply_overrides(plain, ["eval.batch_size=0"])


def test_shape_changes_name_the_keys_that_change_parameter_shapes():
    assert "model.seg_hidden" in shape_keys() and "optim.lr" not in shape_keys()
    saved = OmegaConf.to_container(load_config("synth_cpu"), resolve=True)
    now = load_config("synth_cpu", ["model.seg_hidden=32", "optim.lr=0.5"])
    assert shape_changes(saved, now) == ["model.seg_hidden: 64 -> 32"]  # lr is not a shape
