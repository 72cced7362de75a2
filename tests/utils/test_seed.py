"""seed_everything: reproducible or fast kernels, switched in both directions."""

from __future__ import annotations

import pytest
import torch

from dscnet.utils.seed import seed_everything


@pytest.fixture
def _restore_torch_flags():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def test_deterministic_then_fast_in_one_process(_restore_torch_flags):
    seed_everything(3, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    a = torch.rand(3)
    seed_everything(3, deterministic=False)
    # The fast mode must undo the deterministic one, not leave it on from an earlier run.
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert torch.equal(torch.rand(3), a)  # seeding is the same in both modes
