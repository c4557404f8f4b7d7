"""Generated classification data in the real CIFAR and ImageNet layouts.

No dataset can be downloaded here, so tests, tools and benchmarks write
random images in the on-disk formats that mmpretrain's stock
``CIFAR10`` / ``CIFAR100`` / ``ImageNet`` datasets read unchanged (the
datasets of the classification recipes of R-Mix, `Expeditious
Saliency-guided Mix-up through Random Gradient Thresholding
<https://arxiv.org/abs/2212.04875>`_, and RecursiveMix, `RecursiveMix:
Mixed Learning with History <https://arxiv.org/abs/2203.06844>`_):

* :func:`write_cifar` -- the pickled batches of the python versions of
  CIFAR::

      root/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch,
                               batches.meta
      root/cifar-100-python/train, test, meta

  Each batch is a pickled dict with ``data`` (N x 3072 ``uint8``: the 1024
  red, then green, then blue values of a 32 x 32 image, row-major),
  ``labels`` (CIFAR-10) or ``fine_labels`` + ``coarse_labels`` (CIFAR-100),
  ``filenames`` and ``batch_label``; the meta files hold ``label_names``
  (CIFAR-10) or ``fine_label_names`` + ``coarse_label_names`` (CIFAR-100).
  The class names are placeholders (``class_000`` ...).

  mmpretrain checks the md5 of every file against the real release (and
  tries to download it when they differ), so a generated set is only read
  with that check disabled, e.g. by patching
  ``mmpretrain.datasets.cifar.check_md5`` to return True.
* :func:`write_imagenet` -- the folder layout (``ann_file=''``; mmpretrain's
  ``ImageNet`` scans the class folders, sorted, and needs as many folders as
  classes, 1000 for ImageNet-1k)::

      root/train/<wnid>/<wnid>_<i>.JPEG
      root/val/<wnid>/<wnid>_<i>.JPEG

  The folder names are placeholder WordNet ids ``n00000000``,
  ``n00000001``, ... whose sorted order is the label order.

Images of class ``k`` are noise around a colour drawn for ``k``, so a model
can fit them. The draws use a seeded :class:`numpy.random.Generator`: the
same arguments always write the same files. No OpenMMLab import.
"""
import os
import os.path as osp
import pickle
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from ..core.checks import check_choice, check_int, check_sequence

__all__ = ['CIFAR_VARIANTS', 'write_cifar', 'write_imagenet']

#: ``variant -> (folder, number of classes, train files, test file, meta
#: file)`` as in the python releases of CIFAR-10 / CIFAR-100.
CIFAR_VARIANTS: Dict[str, Tuple[str, int, Tuple[str, ...], str, str]] = {
    'cifar10': ('cifar-10-batches-py', 10,
                tuple(f'data_batch_{i}' for i in range(1, 6)), 'test_batch',
                'batches.meta'),
    'cifar100': ('cifar-100-python', 100, ('train', ), 'test', 'meta'),
}
_CIFAR_SIZE = 32
_CIFAR_SPLITS = ('train', 'test')


def _class_images(rng: np.random.Generator, labels: np.ndarray,
                  colours: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W, 3) uint8 images: per-class colour plus uniform noise in
    [-48, 48]."""
    noise = rng.integers(-48, 49, size=(len(labels), height, width, 3),
                         dtype=np.int16)
    images = colours[labels][:, None, None, :] + noise
    return np.clip(images, 0, 255).astype(np.uint8)


def _balanced_labels(rng: np.random.Generator, n: int,
                     num_classes: int) -> np.ndarray:
    """``n`` labels covering the classes as evenly as possible, shuffled."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_cifar(root: str,
                variant: str = 'cifar10',
                n_per_split: Union[int, Mapping[str, int]] = 8,
                seed: int = 0) -> Dict[str, object]:
    """Write a generated CIFAR-10 / CIFAR-100 in the python-release format.

    The files are those mmpretrain's ``CIFAR10`` / ``CIFAR100`` (and
    torchvision's) read, under ``root/cifar-10-batches-py`` or
    ``root/cifar-100-python``; pass ``data_root=root`` to the dataset. The
    CIFAR-10 training images are split over ``data_batch_1..5`` as evenly as
    possible (a batch may be empty). Existing files are overwritten.

    Note:
        The md5 sums differ from the real release: disable mmpretrain's
        check (patch ``mmpretrain.datasets.cifar.check_md5`` to return
        True) before building the dataset.

    Args:
        root (str): Dataset root (created if missing).
        variant (str): ``'cifar10'`` or ``'cifar100'``. Defaults to
            ``'cifar10'``.
        n_per_split (int | Mapping[str, int]): Images per split: one int for
            both, or ``{'train': n, 'test': m}``. Labels cycle over the
            classes before being shuffled, so every class appears once there
            are at least as many images as classes. Defaults to 8.
        seed (int): Seed of the image and label draws. Defaults to 0.

    Returns:
        dict: ``data_root`` (``root``), ``folder`` (the base folder),
        ``num_classes``, ``labels`` (``{'train': list, 'test': list}`` in
        the order the dataset reads them).
    """
    check_choice('variant', variant, tuple(CIFAR_VARIANTS))
    if isinstance(n_per_split, Mapping):
        if set(n_per_split) != set(_CIFAR_SPLITS):
            raise ValueError('`n_per_split` as a mapping must have exactly '
                             f'the keys {_CIFAR_SPLITS}, got '
                             f'{sorted(n_per_split)}')
        counts = {
            s: check_int(f'n_per_split[{s!r}]', n_per_split[s], 1)
            for s in _CIFAR_SPLITS
        }
    else:
        n = check_int('n_per_split', n_per_split, 1)
        counts = {s: n for s in _CIFAR_SPLITS}
    folder, num_classes, train_files, test_file, meta_file = \
        CIFAR_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    colours = rng.integers(48, 208, size=(num_classes, 3), dtype=np.int16)
    base = osp.join(root, folder)
    os.makedirs(base, exist_ok=True)

    out_labels: Dict[str, List[int]] = {}
    for split in _CIFAR_SPLITS:
        labels = _balanced_labels(rng, counts[split], num_classes)
        images = _class_images(rng, labels, colours, _CIFAR_SIZE, _CIFAR_SIZE)
        # (N, H, W, C) -> (N, C, H, W) -> rows of R | G | B planes
        data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(
            len(labels), -1)
        names = [f'fake_{split}_{i:05d}.png' for i in range(len(labels))]
        files = train_files if split == 'train' else (test_file, )
        chunks = np.array_split(np.arange(len(labels)), len(files))
        for file_idx, (name, idx) in enumerate(zip(files, chunks)):
            entry = dict(
                batch_label=(f'training batch {file_idx + 1} of '
                             f'{len(files)}' if split == 'train' else
                             'testing batch 1 of 1'),
                data=data[idx],
                filenames=[names[i] for i in idx])
            if variant == 'cifar10':
                entry['labels'] = [int(v) for v in labels[idx]]
            else:
                entry['fine_labels'] = [int(v) for v in labels[idx]]
                entry['coarse_labels'] = [int(v) // 5 for v in labels[idx]]
            with open(osp.join(base, name), 'wb') as f:
                pickle.dump(entry, f, protocol=2)
        out_labels[split] = [int(v) for v in labels]

    names = [f'class_{k:03d}' for k in range(num_classes)]
    if variant == 'cifar10':
        meta = dict(
            num_cases_per_batch=int(np.ceil(counts['train'] / 5)),
            label_names=names,
            num_vis=_CIFAR_SIZE * _CIFAR_SIZE * 3)
    else:
        meta = dict(
            fine_label_names=names,
            coarse_label_names=[f'superclass_{k:02d}'
                                for k in range(num_classes // 5)])
    with open(osp.join(base, meta_file), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return dict(
        data_root=root,
        folder=folder,
        num_classes=num_classes,
        labels=out_labels)


def write_imagenet(root: str,
                   n_classes: int = 1000,
                   n_per_class: int = 1,
                   size: Union[int, Sequence[int]] = 32,
                   splits: Sequence[str] = ('train', 'val'),
                   seed: int = 0) -> Dict[str, object]:
    """Write a generated ImageNet in the class-folder layout.

    ``root/<split>/<wnid>/<wnid>_<i>.JPEG`` for every split, with
    ``n_per_class`` JPEG images in each of the ``n_classes`` folders; pass
    ``data_root=root, split=<split>`` to mmpretrain's ``ImageNet`` (no
    ``meta/<split>.txt`` is written, so it scans the folders). mmpretrain's
    ``ImageNet`` has 1000 classes and refuses a different folder count; use
    its ``indices`` argument to train on a few images.

    Args:
        root (str): Dataset root (created if missing), e.g. the
            ``data/imagenet/size160`` copy of the R-Mix recipe.
        n_classes (int): Number of class folders. Defaults to 1000.
        n_per_class (int): Images per class and split. Defaults to 1.
        size (int | Sequence[int]): Image size, ``s`` or ``(h, w)``.
            Defaults to 32.
        splits (Sequence[str]): Split folders to write. Defaults to
            ``('train', 'val')``.
        seed (int): Seed of the image draws. Defaults to 0.

    Returns:
        dict: ``data_root`` (``root``), ``classes`` (folder names in label
        order), ``num_images`` (``{split: count}``).
    """
    n_classes = check_int('n_classes', n_classes, 1)
    n_per_class = check_int('n_per_class', n_per_class, 1)
    if isinstance(size, (int, np.integer)):  # check_int refuses a bool
        height = width = check_int('size', size, 8)
    else:  # an (h, w) pair
        height, width = check_sequence('size', size, check_int, 8, length=2)
    if isinstance(splits, str) or not splits or not all(
            isinstance(s, str) and s and osp.basename(s) == s
            for s in splits):
        raise ValueError('`splits` must be a non-empty sequence of folder '
                         f'names, got {splits!r}')
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(48, 208, size=(n_classes, 3), dtype=np.int16)
    classes = [f'n{k:08d}' for k in range(n_classes)]
    labels = np.repeat(np.arange(n_classes), n_per_class)
    for split in splits:
        images = _class_images(rng, labels, colours, height, width)
        for i, (label, image) in enumerate(zip(labels, images)):
            wnid = classes[label]
            folder = osp.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image).save(
                osp.join(folder, f'{wnid}_{i % n_per_class}.JPEG'),
                format='JPEG',
                quality=90)
    return dict(
        data_root=root,
        classes=classes,
        num_images={s: len(labels)
                    for s in splits})
