import os

import pytest
import torch

# Keep the suite's CPU use predictable on small CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
