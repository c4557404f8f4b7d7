"""Generated detection and segmentation data in the real on-disk formats.

No dataset can be downloaded here, so tests, demos and benchmarks draw
random filled shapes and write them in the layouts the stock OpenMMLab
loaders read unchanged:

* :func:`make_coco_shapes` -- COCO instances (mmdet ``CocoDataset``)::

      data_root/train2017/<id>.jpg
      data_root/val2017/<id>.jpg
      data_root/annotations/instances_train2017.json
      data_root/annotations/instances_val2017.json

  Each shape is one instance: its polygon is the ``segmentation``, the
  polygon's bounds the ``bbox`` (``[x, y, w, h]``), the filled polygon's
  pixel count the ``area``. With ``crowd_prob > 0`` some instances are
  ``iscrowd=1`` (mmdet turns them into ``ignored_instances``).
* :func:`make_ade20k_shapes` -- ADE20K scene parsing (mmseg
  ``ADE20KDataset``)::

      data_root/images/training/<name>.jpg
      data_root/annotations/training/<name>.png
      data_root/images/validation/<name>.jpg
      data_root/annotations/validation/<name>.png

  Label maps are single-channel PNGs; 0 is ADE20K's "other" (ignored after
  ``reduce_zero_label``), shapes carry labels ``1..num_classes``.

The draws use a seeded :class:`numpy.random.Generator`, so the same
arguments always write the same files. No OpenMMLab import.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = [
    'SHAPE_CLASSES', 'make_coco_shapes', 'make_ade20k_shapes', 'random_shapes'
]

#: Category names of :func:`make_coco_shapes`, in category-id order (1..).
SHAPE_CLASSES: Tuple[str, ...] = ('rectangle', 'ellipse', 'triangle')


def _polygon(kind: int, x1: float, y1: float, x2: float,
             y2: float) -> List[float]:
    """Flat ``[x0, y0, x1, y1, ...]`` polygon of a shape in a box."""
    if kind == 0:
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    if kind == 1:
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 -
                                                                       y1) / 2
        pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
        return [round(float(v), 2) for v in pts.reshape(-1)]
    return [(x1 + x2) / 2, y1, x2, y2, x1, y2]


def random_shapes(rng: np.random.Generator,
                  height: int,
                  width: int,
                  max_shapes: int = 4,
                  min_size: int = 6) -> List[Tuple[int, List[float]]]:
    """Draw up to ``max_shapes`` shapes as ``(kind, polygon)`` pairs.

    Args:
        rng (numpy.random.Generator): Source of randomness.
        height (int): Image height (>= ``min_size + 1``).
        width (int): Image width (>= ``min_size + 1``).
        max_shapes (int): Most shapes per image (at least 1 is drawn).
            Defaults to 4.
        min_size (int): Smallest side of a shape's box, pixels. Defaults
            to 6.

    Returns:
        list[tuple[int, list[float]]]: ``kind`` indexes
        :data:`SHAPE_CLASSES`; the polygon is flat ``[x0, y0, ...]``.
    """
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        w = int(rng.integers(min_size, max(min_size + 1, width * 2 // 3)))
        h = int(rng.integers(min_size, max(min_size + 1, height * 2 // 3)))
        x1 = int(rng.integers(0, width - w + 1))
        y1 = int(rng.integers(0, height - h + 1))
        kind = int(rng.integers(len(SHAPE_CLASSES)))
        shapes.append((kind, _polygon(kind, x1, y1, x1 + w, y1 + h)))
    return shapes


def _fill(draw_size: Tuple[int, int], polygon: Sequence[float]) -> np.ndarray:
    """Bool (H, W) raster of a polygon (PIL's fill rule)."""
    from PIL import Image, ImageDraw

    h, w = draw_size
    canvas = Image.new('L', (w, h), 0)
    ImageDraw.Draw(canvas).polygon([float(v) for v in polygon], fill=1)
    return np.asarray(canvas, dtype=bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(40, 200, size=3)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _check_sizes(sizes: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out = []
    for s in sizes:
        h, w = (int(v) for v in s)
        if h < 16 or w < 16:
            raise ValueError(f'`sizes` must be (h, w) pairs >= 16, got {s!r}')
        out.append((h, w))
    if not out:
        raise ValueError('`sizes` must not be empty')
    return out


def make_coco_shapes(data_root: str,
                     num_train: int = 8,
                     num_val: int = 4,
                     sizes: Sequence[Tuple[int, int]] = ((64, 80), (96, 72)),
                     crowd_prob: float = 0.1,
                     seed: int = 0) -> Dict[str, object]:
    """Write a tiny COCO-format instance set of random shapes.

    Image ``i`` has size ``sizes[i % len(sizes)]`` (``(h, w)``). Every
    image has at least one non-crowd instance. Later shapes are drawn over
    earlier ones; the annotations keep the full polygons (as COCO does for
    occluded objects).

    Args:
        data_root (str): Output folder (created).
        num_train (int): Training images. Defaults to 8.
        num_val (int): Validation images. Defaults to 4.
        sizes (Sequence[tuple[int, int]]): Image sizes ``(h, w)``, each
            >= 16, used in turn. Defaults to ``((64, 80), (96, 72))``.
        crowd_prob (float): Chance that an instance after the first is
            ``iscrowd=1``. Defaults to 0.1.
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        dict: ``data_root``, ``classes``, and per split the image folder
        (``train_img``/``val_img``, relative to ``data_root``) and the
        annotation file (``train_ann``/``val_ann``, relative).
    """
    from PIL import Image

    sizes = _check_sizes(sizes)
    rng = np.random.default_rng(seed)
    info: Dict[str, object] = dict(data_root=data_root, classes=SHAPE_CLASSES)
    os.makedirs(osp.join(data_root, 'annotations'), exist_ok=True)
    ann_id, img_id = 1, 1
    for split, num in (('train', num_train), ('val', num_val)):
        img_dir = f'{split}2017'
        os.makedirs(osp.join(data_root, img_dir), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            h, w = sizes[i % len(sizes)]
            img = _background(rng, h, w)
            for j, (kind, poly) in enumerate(random_shapes(rng, h, w)):
                mask = _fill((h, w), poly)
                colour = rng.integers(0, 256, size=3)
                img[mask] = colour
                xs, ys = poly[0::2], poly[1::2]
                x1, y1 = min(xs), min(ys)
                crowd = int(j > 0 and rng.random() < crowd_prob)
                annotations.append(
                    dict(id=ann_id,
                         image_id=img_id,
                         category_id=kind + 1,
                         segmentation=[poly],
                         area=float(mask.sum()),
                         bbox=[x1, y1, max(xs) - x1,
                               max(ys) - y1],
                         iscrowd=crowd))
                ann_id += 1
            name = f'{img_id:012d}.jpg'
            Image.fromarray(img).save(osp.join(data_root, img_dir, name),
                                      quality=95)
            images.append(dict(id=img_id, file_name=name, height=h, width=w))
            img_id += 1
        ann_file = osp.join('annotations', f'instances_{split}2017.json')
        coco = dict(images=images,
                    annotations=annotations,
                    categories=[
                        dict(id=k + 1, name=n, supercategory='shape')
                        for k, n in enumerate(SHAPE_CLASSES)
                    ])
        with open(osp.join(data_root, ann_file), 'w') as f:
            json.dump(coco, f)
        info[f'{split}_img'] = img_dir + '/'
        info[f'{split}_ann'] = ann_file
    return info


def make_ade20k_shapes(data_root: str,
                       num_train: int = 8,
                       num_val: int = 4,
                       sizes: Sequence[Tuple[int, int]] = ((64, 64), (80, 96)),
                       num_classes: int = 150,
                       seed: int = 0) -> Dict[str, object]:
    """Write a tiny ADE20K-layout scene-parsing set of random shapes.

    Each image's label map starts at 0 ("other"); each shape gets a random
    label in ``1..num_classes`` and overwrites the map where it is drawn.

    Args:
        data_root (str): Output folder (created).
        num_train (int): Training images. Defaults to 8.
        num_val (int): Validation images. Defaults to 4.
        sizes (Sequence[tuple[int, int]]): Image sizes ``(h, w)``, each
            >= 16, used in turn. Defaults to ``((64, 64), (80, 96))``.
        num_classes (int): Labels drawn from ``1..num_classes``, <= 255.
            Defaults to 150 (ADE20K).
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        dict: ``data_root`` and, per split, the image and annotation folders
        relative to ``data_root`` (``train_img``, ``train_seg``, ``val_img``,
        ``val_seg``).
    """
    from PIL import Image

    sizes = _check_sizes(sizes)
    if not 1 <= int(num_classes) <= 255:
        raise ValueError(f'`num_classes` must be in [1, 255], got '
                         f'{num_classes!r}')
    rng = np.random.default_rng(seed)
    info: Dict[str, object] = dict(data_root=data_root)
    for split, num in (('training', num_train), ('validation', num_val)):
        img_dir = osp.join('images', split)
        seg_dir = osp.join('annotations', split)
        for d in (img_dir, seg_dir):
            os.makedirs(osp.join(data_root, d), exist_ok=True)
        for i in range(num):
            h, w = sizes[i % len(sizes)]
            img = _background(rng, h, w)
            seg = np.zeros((h, w), dtype=np.uint8)
            for _, poly in random_shapes(rng, h, w, max_shapes=5):
                mask = _fill((h, w), poly)
                img[mask] = rng.integers(0, 256, size=3)
                seg[mask] = int(rng.integers(1, num_classes + 1))
            name = f'ADE_{split[:5]}_{i:08d}'
            Image.fromarray(img).save(osp.join(data_root, img_dir,
                                               name + '.jpg'),
                                      quality=95)
            Image.fromarray(seg).save(
                osp.join(data_root, seg_dir, name + '.png'))
        key = 'train' if split == 'training' else 'val'
        info[f'{key}_img'] = img_dir
        info[f'{key}_seg'] = seg_dir
    return info
