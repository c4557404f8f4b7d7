"""mmseg adapters: a ``SegDataPreProcessor`` that runs batch augments, and
the batch augments RecursiveMix and CutMix (``mmseg.registry.MODELS``)."""
from .cutmix import SegCutMix
from .data_preprocessor import (SEG_FIELDS, MixSegDataPreProcessor,
                                SegBatchAugments)
from .recursivemix import RecursiveMix

__all__ = [
    'MixSegDataPreProcessor', 'SegBatchAugments', 'RecursiveMix', 'SegCutMix',
    'SEG_FIELDS'
]
