import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build with mmseg's registries whatever scope earlier tests left."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
