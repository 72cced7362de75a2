"""The losses' fixed-shape (GPU) path gives the numbers of the compact (CPU) path.

Off the CPU the contrastive losses pad anchors and memories to fixed shapes so that the host
never waits for the device (``static_shapes``); these tests force that path on the CPU and
compare it with the default one, value for value.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dscnet.losses.cross_stream import CrossStreamContrast
from dscnet.losses.memory import ClassQueueMemory, PrototypeMemory
from dscnet.losses.pgcl import PixelGroupContrast, sample_group_anchors, static_shapes_for
from dscnet.losses.sgcl import SemanticGraphContrast

C = 3


def _labels(b: int = 4, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, C + 1, (b, h, w), generator=g)
    lab[:, 0, :3] = 255
    lab[1, 2:, :] = 255  # groups with different numbers of confident pixels
    return lab


def test_auto_setting_pads_only_off_the_cpu():
    x = torch.zeros(1)
    assert static_shapes_for(x, None) is False
    assert static_shapes_for(x, True) is True and static_shapes_for(x, False) is False
    assert static_shapes_for(torch.zeros(1, device="meta"), None) is True


@pytest.mark.parametrize("max_anchors", [None, 5, 1000])
def test_static_width_keeps_the_same_anchors(max_anchors):
    labels = _labels().reshape(2, -1)  # 2 groups of 72 pixels
    compact = sample_group_anchors(labels, C + 1, max_anchors, torch.Generator().manual_seed(3))
    padded = sample_group_anchors(
        labels, C + 1, max_anchors, torch.Generator().manual_seed(3), static_width=True
    )
    width = 72 if max_anchors is None else min(max_anchors, 72)
    assert padded[0].shape == (2, width) and padded[1].shape == (2, width)
    a = compact[0].shape[1]
    assert a < width or max_anchors == 5  # the compact width depends on the labels
    assert torch.equal(padded[0][:, :a], compact[0]) and torch.equal(padded[1][:, :a], compact[1])
    assert not padded[1][:, a:].any() and not padded[0][:, a:].any()


def _two_calls(loss_fn, *args):
    return [loss_fn(*args).item() for _ in range(2)]  # the second call reads the memory


def test_pgcl_static_path_same_loss_and_memory():
    labels = _labels()
    embed = F.normalize(torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    runs = {}
    for static in (False, True):
        torch.manual_seed(0)  # anchor sampling draws from the global generator
        fn = PixelGroupContrast(C, max_anchors=10, memory_size=4, embed_dim=8, static_shapes=static)
        runs[static] = (_two_calls(fn, embed, labels, 2), fn.memory.state_dict())
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    for key, value in runs[False][1].items():
        assert torch.equal(runs[True][1][key], value), key


@pytest.mark.parametrize("kind", ["queue", "prototype"])
def test_sgcl_static_path_same_loss(kind):
    g = torch.Generator().manual_seed(2)
    nodes = torch.randn(8, 4, generator=g)
    node_class = torch.tensor([0, 1, 0, 1, 0, 2, 0, 2])
    node_image = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    losses = {}
    for static in (False, True):
        fn = SemanticGraphContrast(C, memory=kind, memory_size=3, embed_dim=4, static_shapes=static)
        losses[static] = _two_calls(fn, nodes, node_class, node_image)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_cross_static_path_same_loss():
    labels = _labels()
    g = torch.Generator().manual_seed(4)
    embed = F.normalize(torch.randn(4, 4, 6, 6, generator=g), dim=1)
    nodes = torch.randn(8, 4, generator=g)
    node_class = torch.tensor([0, 1, 0, 2, 0, 3, 0, 1])
    node_image = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    losses = {}
    for static in (False, True):
        torch.manual_seed(0)
        fn = CrossStreamContrast(max_anchors=7, static_shapes=static)
        losses[static] = fn(embed, labels, nodes, node_class, node_image, 2).item()
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_queue_padded_read_holds_get_plus_empty_slots():
    mem = ClassQueueMemory(3, 2, 2)
    mem.enqueue(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), torch.tensor([2, 0, 2]))
    feats, labels = mem.get_padded()
    assert labels.tolist() == [0, -1, -1, -1, 2, 2]
    assert torch.equal(feats[labels >= 0], mem.get()[0])
    feats.zero_()  # a copy: the memory is untouched
    assert mem.get()[0][:, 0].tolist() == [2.0, 1.0, 3.0]


def test_queue_update_with_only_ignored_items_changes_nothing():
    mem = ClassQueueMemory(2, 1, 2)
    mem.enqueue(torch.tensor([[5.0]]), torch.tensor([1]))
    before = {k: v.clone() for k, v in mem.state_dict().items()}
    mem.enqueue(torch.tensor([[7.0], [8.0]]), torch.tensor([255, -1]))
    for key, value in before.items():
        assert torch.equal(mem.state_dict()[key], value), key


def test_prototype_padded_read_and_ignored_items():
    mem = PrototypeMemory(3, 2)
    mem.update(torch.tensor([[0.0, 2.0], [9.0, 9.0]]), torch.tensor([1, 255]))
    feats, labels = mem.get_padded()
    assert labels.tolist() == [-1, 1, -1]
    assert torch.allclose(feats[1], torch.tensor([0.0, 1.0]))  # the ignored item left no trace
