"""Fixtures of the conformance suite (helpers are in conformance_kit.py)."""

import pytest
import torch

from conformance_kit import KINDS


@pytest.fixture(autouse=True)
def _float32_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(params=list(KINDS))
def kind(request) -> str:
    return request.param
