import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Build with mmdet's registries whatever scope earlier tests left."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
