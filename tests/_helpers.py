"""Test helpers shared by several test modules (tests/ is on sys.path under pytest)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test on one torch thread, restoring the count after.

    Tiny networks on a shared 2-core machine: intra-op threads only add
    synchronisation cost. Autouse in every module that imports it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
