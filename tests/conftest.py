"""Fixtures several test modules share."""

from __future__ import annotations

import pytest
import torch

from sfx_cnnhit.models.checkpoint import save_checkpoint
from sfx_cnnhit.models.zoo import create_model


@pytest.fixture()
def one_torch_thread():
    """Tiny networks run fastest on one thread (two threads spin badly on a busy 2-core machine);
    modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained tiny hit/miss HitNet checkpoint (``hitnet_test``, 32x32 input)."""
    model, spec = create_model("hitnet_test", task="hitmiss")
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", model.eval(), spec)
