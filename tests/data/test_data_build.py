"""build_dataset / loaders from configs: shapes, groups, worker independence, DDP, sharding."""

from __future__ import annotations

import itertools

import pytest
import torch

from dscnet.config import load_config
from dscnet.data.build import (
    build_dataset,
    build_eval_loader,
    build_train_loader,
    class_names,
    num_classes,
)
from dscnet.data.synth import synth_spec
from dscnet.errors import ConfigError, DatasetError

SMALL = [
    "data.synth.num_train=40",
    "data.synth.num_val=10",
    "data.synth.image_size=48",
    "data.train_aug.crop_size=40",
    "data.sampler.groups_per_batch=3",
    "data.sampler.group_size=2",
    "eval.batch_size=4",
]


def _cfg(*extra: str):
    return load_config("base", [*SMALL, *extra])


def _batches(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def test_synth_datasets_and_class_helpers():
    cfg = _cfg()
    assert num_classes(cfg) == 8 and class_names(cfg)[0] == "background"
    train = build_dataset(cfg, "train", train=True)
    item = train[(3, 123)]
    assert set(item) == {"image", "tags", "mask", "valid", "index", "id"}
    assert item["image"].shape == (3, 40, 40) and item["mask"].shape == (40, 40)
    assert item["tags"].shape == (8,) and item["tags"].dtype == torch.float32
    assert item["index"] == 3 and item["id"] == "train_00003"
    val = build_dataset(cfg, "val", train=False)
    assert len(val) == 10 and val[0]["image"].shape == (3, 48, 48)
    assert synth_spec(load_config("base", ["data.type=synth_photo"])).photo_backgrounds


def test_train_loader_batches_are_groups_sharing_a_tag():
    cfg = _cfg()
    loader = build_train_loader(cfg, build_dataset(cfg, "train", train=True))
    for batch in _batches(loader, 4):
        assert batch["image"].shape == (6, 3, 40, 40) and batch["tags"].shape == (6, 8)
        assert batch["valid"].dtype == torch.bool and len(batch["id"]) == 6
        for g in range(3):
            pair = batch["tags"][2 * g : 2 * g + 2]
            assert (pair[0] * pair[1]).sum() >= 1


def test_batches_do_not_depend_on_num_workers_and_resume():
    cfg0, cfg2 = _cfg(), _cfg("data.num_workers=2")
    ds = build_dataset(cfg0, "train", train=True)
    a = _batches(build_train_loader(cfg0, ds), 3)
    b = _batches(build_train_loader(cfg2, ds), 3)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and x["id"] == y["id"]
    resumed = build_train_loader(cfg0, ds)
    resumed.batch_sampler.set_step(2)
    assert torch.equal(next(iter(resumed))["image"], a[2]["image"])


def test_ddp_rank_loaders_union_equals_single_process_batch():
    cfg = _cfg()
    ds = build_dataset(cfg, "train", train=True)
    single = next(iter(build_train_loader(_cfg("data.sampler.groups_per_batch=6"), ds)))
    parts = [next(iter(build_train_loader(cfg, ds, rank=r, world_size=2))) for r in range(2)]
    assert torch.equal(torch.cat([p["image"] for p in parts]), single["image"])
    assert sum((p["id"] for p in parts), []) == single["id"]


def test_eval_loader_shards_without_duplicates():
    cfg = _cfg()
    ds = build_dataset(cfg, "val", train=False)
    seen = []
    for rank in range(3):
        for groups in build_eval_loader(cfg, ds, rank=rank, world_size=3):
            assert len(groups) == 1  # synthetic images share one size: one batch per step
            batch = groups[0]
            assert batch["image"].shape[0] <= 4 and tuple(batch["image"].shape[-2:]) == (48, 48)
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(10))


def test_evaluation_does_not_shift_the_global_random_stream():
    cfg = _cfg()
    ds = build_dataset(cfg, "val", train=False)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    for _ in build_eval_loader(cfg, ds):
        pass
    assert torch.equal(torch.rand(3), expected)


def test_config_errors():
    # data.type is any registered name (plug-ins too): refused when the dataset is built,
    # the first thing every command does.
    with pytest.raises(ConfigError, match=r"data.type 'bogus' is unknown \(choose one of coco, folder, synth"):
        build_dataset(load_config("base", ["data.type=bogus"]), "train", train=True)
    with pytest.raises(ConfigError, match="data.type=voc needs data.root"):
        build_dataset(load_config("base", ["data.type=voc"]), "train", train=True)


def test_voc_through_build(tiny_voc):
    cfg = load_config("base", ["data.type=voc", f"data.root={tiny_voc['root']}"])
    assert class_names(cfg) == tiny_voc["classes"]
    val = build_dataset(cfg, "val", train=False)
    assert len(val) == 4 and torch.equal(
        val[1]["mask"], torch.from_numpy(tiny_voc["masks"]["img1"]).long()
    )
    with pytest.raises(DatasetError, match="split file not found"):
        build_dataset(cfg, "nosuch", train=False)


def test_a_registered_dataset_type_is_built_like_the_built_in_ones(monkeypatch):
    from dscnet.data import registry
    from dscnet.data.base import SubsetDataset

    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    synth = load_config("base", ["data.synth.num_train=6", "data.synth.num_val=4"])

    @registry.register_dataset("first_images", class_names=lambda cfg: ["background", "x"])
    def build_first(cfg, split):  # a plug-in: the first 3 images of the synthetic split
        return SubsetDataset(build_dataset(synth, split, train=False).dataset, range(3))

    cfg = load_config("base", ["data.type=first_images"])
    assert len(build_dataset(cfg, "val", train=False)) == 3
    assert class_names(cfg) == ["background", "x"]  # the cheap path, no split read
    assert "first_images" in registry.list_datasets()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_dataset("first_images")(build_first)
    with pytest.raises(ConfigError, match="choose one of .*first_images"):
        build_dataset(load_config("base", ["data.type=nope"]), "val", train=False)
