"""Data the demos and tests generate locally (no download, no mm import)."""
from .digits import DIGITS_CLASSES, load_digits_split, prepare_digits
from .fake_classification import write_cifar, write_imagenet

__all__ = [
    'prepare_digits', 'load_digits_split', 'DIGITS_CLASSES', 'write_cifar',
    'write_imagenet'
]
