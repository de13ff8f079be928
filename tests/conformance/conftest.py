"""Fixtures of the conformance suite (helpers are in conformance_kit.py)."""

import pytest

from conformance_kit import KINDS


@pytest.fixture(params=list(KINDS))
def kind(request) -> str:
    return request.param
