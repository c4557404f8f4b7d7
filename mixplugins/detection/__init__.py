"""mmdet adapters: batch augments registered in ``mmdet.registry.MODELS``
for ``DetDataPreprocessor(batch_augments=[...])``."""
from .recursivemix import RecursiveMix

__all__ = ['RecursiveMix']
