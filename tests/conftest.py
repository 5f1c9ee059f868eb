"""Shared test setup: the repository root on sys.path, one torch thread (tests share 2 cores)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


@pytest.fixture
def root() -> Path:
    return ROOT
