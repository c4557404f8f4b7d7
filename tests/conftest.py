"""Fixtures shared by the tests; plain helpers are in ``tests/_helpers.py``.

Per-task fixtures stay next to their tests (``tests/test_detection`` and
``tests/test_segmentation`` pin the default scope).
"""
import pytest

from tests._helpers import set_epoch


@pytest.fixture
def epoch0():
    """Epoch 0 in the current ``MessageHub`` (what the augments read to
    reset their history), whatever earlier tests left there.

    Use with ``pytestmark = pytest.mark.usefixtures('epoch0')``."""
    set_epoch(0)
    yield
