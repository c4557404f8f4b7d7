"""The bundled demo data: scikit-learn's handwritten digits as image folders.

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test
set (1797 grey 8x8 images, 10 classes, values 0..16) inside the package
(:func:`sklearn.datasets.load_digits`), so it needs no download. This module
upscales the images to ``size x size`` RGB ``uint8`` (32 px by default, the
CIFAR size the demo networks and the R-Mix grids expect) and writes them in
the folder layout mmpretrain's ``CustomDataset`` reads without an annotation
file::

    data_root/train/<class>/<index>.png
    data_root/val/<class>/<index>.png
    data_root/digits.json          # written last: the split is complete

The split is fixed and stratified without any random draw: per class, the
images (in the order scikit-learn gives them) at ``val_per_class`` evenly
spaced positions go to ``val``, the rest to ``train`` -- 1497 / 300 with the
defaults.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Tuple, Union

import numpy as np

from ..core.checks import check_choice, check_int

__all__ = ['prepare_digits', 'load_digits_split', 'DIGITS_CLASSES']

#: Class (folder) names, in label order.
DIGITS_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))

#: Resize modes accepted by :func:`load_digits_split`.
INTERPOLATIONS = ('nearest', 'bilinear')

_MARKER = 'digits.json'
_SPLITS = ('train', 'val')


def _check_args(size: int, val_per_class: int, interpolation: str) -> None:
    check_int('size', size, 8)
    # at most 100: the smallest class has 174 images
    check_int('val_per_class', val_per_class, 1, 100)
    check_choice('interpolation', interpolation, INTERPOLATIONS)


def _split_indices(labels: np.ndarray,
                   val_per_class: int) -> Dict[str, np.ndarray]:
    """Stratified, deterministic train/val indices (sorted)."""
    val: List[np.ndarray] = []
    for c in range(len(DIGITS_CLASSES)):
        idx = np.flatnonzero(labels == c)
        pos = np.linspace(0, len(idx) - 1, val_per_class).round().astype(int)
        val.append(idx[pos])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return dict(train=train_idx, val=val_idx)


def _to_rgb_uint8(images: np.ndarray, size: int,
                  interpolation: str) -> np.ndarray:
    """(N, 8, 8) values 0..16 -> (N, size, size, 3) uint8 0..255."""
    from PIL import Image

    grey = np.clip(np.round(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if size == grey.shape[-1]:
        big = grey
    else:
        resample = dict(nearest=Image.NEAREST,
                        bilinear=Image.BILINEAR)[interpolation]
        big = np.stack([
            np.asarray(Image.fromarray(g).resize((size, size), resample))
            for g in grey
        ])
    return np.repeat(big[..., None], 3, axis=-1)


def load_digits_split(
    split: str,
    size: int = 32,
    val_per_class: int = 30,
    interpolation: str = 'bilinear'
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load one split of the digits in memory, exactly as written to disk.

    Args:
        split (str): ``'train'`` or ``'val'``.
        size (int): Side of the square output images, >= 8. Defaults to 32.
        val_per_class (int): Validation images per class, in [1, 100].
            Defaults to 30.
        interpolation (str): Upscaling mode, ``'nearest'`` or
            ``'bilinear'``. Defaults to ``'bilinear'``.

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: Images (N, size, size, 3)
        uint8 RGB, labels (N,) int64 and the indices (N,) of the images in
        scikit-learn's order.
    """
    check_choice('split', split, _SPLITS)
    _check_args(size, val_per_class, interpolation)
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray(digits.target, dtype=np.int64)
    idx = _split_indices(labels, val_per_class)[split]
    images = _to_rgb_uint8(digits.images[idx], size, interpolation)
    return images, labels[idx], idx


def _is_complete(data_root: str, expected: dict) -> bool:
    """Whether ``data_root`` holds exactly the split ``expected`` describes."""
    marker = osp.join(data_root, _MARKER)
    if not osp.isfile(marker):
        return False
    try:
        with open(marker) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    if {k: found.get(k) for k in expected} != expected:
        return False
    for split in _SPLITS:
        for cls, count in expected[f'{split}_counts'].items():
            folder = osp.join(data_root, split, cls)
            if not osp.isdir(folder) or sum(
                    n.endswith('.png') for n in os.listdir(folder)) != count:
                return False
    return True


def prepare_digits(data_root: Union[str, os.PathLike],
                   size: int = 32,
                   val_per_class: int = 30,
                   interpolation: str = 'bilinear') -> dict:
    """Write scikit-learn's digits in mmpretrain's ``CustomDataset`` layout.

    Idempotent: if ``data_root`` already holds a complete split made with the
    same arguments (checked through ``data_root/digits.json`` and the number
    of PNG files per class), nothing is written. Otherwise the ``train`` and
    ``val`` folders under ``data_root`` are deleted and rewritten, and the
    marker file is written last. Other files in ``data_root`` are left
    alone. Not safe to call from several processes at once.

    Args:
        data_root (str | os.PathLike): Output folder; created if needed.
        size (int): Side of the square RGB images, >= 8. Defaults to 32.
        val_per_class (int): Validation images per class, in [1, 100].
            Defaults to 30 (a 1497 / 300 split).
        interpolation (str): Upscaling mode, ``'nearest'`` or
            ``'bilinear'``. Defaults to ``'bilinear'``.

    Returns:
        dict: ``data_root`` (str), ``classes`` (list of str),
        ``num_train`` / ``num_val`` (int), ``train_counts`` /
        ``val_counts`` (dict class -> count), ``size``,
        ``interpolation`` and ``created`` (bool: whether files were written).
    """
    if not isinstance(data_root, (str, os.PathLike)):
        raise TypeError('`data_root` must be a str or os.PathLike, got '
                        f'{type(data_root).__name__}')
    data_root = os.fspath(data_root)
    _check_args(size, val_per_class, interpolation)
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray(digits.target, dtype=np.int64)
    indices = _split_indices(labels, val_per_class)
    expected = dict(source='sklearn.datasets.load_digits',
                    size=size,
                    interpolation=interpolation,
                    val_per_class=val_per_class,
                    classes=list(DIGITS_CLASSES))
    for split in _SPLITS:
        counts = np.bincount(labels[indices[split]],
                             minlength=len(DIGITS_CLASSES))
        expected[f'{split}_counts'] = {
            c: int(n)
            for c, n in zip(DIGITS_CLASSES, counts)
        }
    info = dict(data_root=data_root,
                classes=list(DIGITS_CLASSES),
                num_train=int(len(indices['train'])),
                num_val=int(len(indices['val'])),
                train_counts=expected['train_counts'],
                val_counts=expected['val_counts'],
                size=size,
                interpolation=interpolation)
    if _is_complete(data_root, expected):
        return dict(info, created=False)

    from PIL import Image

    marker = osp.join(data_root, _MARKER)
    if osp.exists(marker):
        os.remove(marker)
    for split in _SPLITS:
        split_dir = osp.join(data_root, split)
        if osp.isdir(split_dir):
            shutil.rmtree(split_dir)
        images = _to_rgb_uint8(digits.images[indices[split]], size,
                               interpolation)
        for cls in DIGITS_CLASSES:
            os.makedirs(osp.join(split_dir, cls), exist_ok=True)
        for image, i in zip(images, indices[split]):
            path = osp.join(split_dir, DIGITS_CLASSES[labels[i]],
                            f'{int(i):04d}.png')
            Image.fromarray(image).save(path)
    with open(marker, 'w') as f:
        json.dump(expected, f, indent=1)
    return dict(info, created=True)
