"""ClassQueueMemory and PrototypeMemory: FIFO order, wraparound, sizes, EMA values."""

from __future__ import annotations

import math

import torch

from dscnet.losses.memory import ClassQueueMemory, PrototypeMemory


def _vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_queue_starts_empty():
    mem = ClassQueueMemory(3, 2, 4)
    feats, labels = mem.get()
    assert feats.shape == (0, 2) and labels.shape == (0,)


def test_queue_fifo_order_and_wraparound():
    mem = ClassQueueMemory(3, 1, 3)
    # Class 1 gets a, b then c, d: the 4th item wraps round and overwrites the oldest (a).
    mem.enqueue(_vec(1, 2)[:, None], torch.tensor([1, 1]))
    assert mem.count.tolist() == [0, 2, 0] and mem.ptr.tolist() == [0, 2, 0]
    mem.enqueue(_vec(3, 4)[:, None], torch.tensor([1, 1]))
    assert mem.count.tolist() == [0, 3, 0] and mem.ptr.tolist() == [0, 1, 0]
    assert mem.queue[1, :, 0].tolist() == [4.0, 2.0, 3.0]
    feats, labels = mem.get()
    assert feats[:, 0].tolist() == [4.0, 2.0, 3.0]
    assert labels.tolist() == [1, 1, 1]


def test_queue_interleaved_classes_and_ignore_label():
    mem = ClassQueueMemory(3, 1, 2)
    mem.enqueue(_vec(10, 20, 11, 99, 21, 12)[:, None], torch.tensor([0, 2, 0, 255, 2, 0]))
    # Class 0 received 10, 11, 12 with size 2: only the latest two (11, 12) are kept, in
    # arrival order starting at slot 0; class 2 keeps 20, 21; label 255 is ignored.
    assert mem.queue[0, :, 0].tolist() == [11.0, 12.0]
    assert mem.queue[2, :, 0].tolist() == [20.0, 21.0]
    assert mem.count.tolist() == [2, 0, 2] and mem.ptr.tolist() == [0, 0, 0]
    feats, labels = mem.get()
    assert feats[:, 0].tolist() == [11.0, 12.0, 20.0, 21.0]
    assert labels.tolist() == [0, 0, 2, 2]


def test_queue_overflow_in_one_call_after_partial_fill():
    mem = ClassQueueMemory(1, 1, 3)
    mem.enqueue(_vec(1)[:, None], torch.tensor([0]))  # ptr 1
    mem.enqueue(_vec(2, 3, 4, 5, 6)[:, None], torch.tensor([0] * 5))
    # Latest three (4, 5, 6) written at slots 1, 2, 0.
    assert mem.queue[0, :, 0].tolist() == [6.0, 4.0, 5.0]
    assert mem.ptr.tolist() == [1] and mem.count.tolist() == [3]


def test_queue_detaches_and_state_dict_roundtrip(tmp_path):
    mem = ClassQueueMemory(2, 3, 2)
    x = torch.randn(3, 3, requires_grad=True)
    mem.enqueue(x, torch.tensor([0, 1, 1]))
    assert not mem.queue.requires_grad
    assert set(mem.state_dict()) == {"queue", "ptr", "count"}
    torch.save(mem.state_dict(), tmp_path / "mem.pt")
    other = ClassQueueMemory(2, 3, 2)
    other.load_state_dict(torch.load(tmp_path / "mem.pt", weights_only=True))
    f1, l1 = mem.get()
    f2, l2 = other.get()
    assert torch.equal(f1, f2) and torch.equal(l1, l2)


def test_queue_mismatched_lengths_raise():
    mem = ClassQueueMemory(2, 3, 2)
    try:
        mem.enqueue(torch.zeros(2, 3), torch.tensor([0]))
    except ValueError as exc:
        assert "2 embeddings but 1 labels" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_prototype_first_update_is_normalised_mean():
    mem = PrototypeMemory(3, 2, momentum=0.9)
    mem.update(torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]]), torch.tensor([1, 1, 2]))
    feats, labels = mem.get()
    assert labels.tolist() == [1, 2]
    s = 1 / math.sqrt(2)
    assert torch.allclose(feats, torch.tensor([[s, s], [1.0, 0.0]]))


def test_prototype_ema_hand_computed():
    mem = PrototypeMemory(2, 2, momentum=0.9)
    mem.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    mem.update(torch.tensor([[0.0, 3.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    # mean (0, 2) -> (0, 1); 0.9 * (1, 0) + 0.1 * (0, 1) = (0.9, 0.1), renormalised.
    expected = torch.tensor([0.9, 0.1]) / math.sqrt(0.82)
    assert torch.allclose(mem.prototypes[0], expected)
    assert mem.initialized.tolist() == [True, False]
    # A class absent from an update keeps its prototype.
    mem.update(torch.tensor([[1.0, 1.0]]), torch.tensor([1]))
    assert torch.allclose(mem.prototypes[0], expected)
    mem.reset()
    assert mem.get()[0].shape == (0, 2)
