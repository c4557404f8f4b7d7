r"""Geometry of a box paste: images, boxes and instance masks.

These kernels let RecursiveMix (`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_, Yang et al., NeurIPS 2022; official
code: https://github.com/implus/RecursiveMix-pytorch) and CutMix
(`CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features <https://arxiv.org/abs/1905.04899>`_, Yun et al., ICCV
2019) run inside detection and segmentation training. The official
RecursiveMix code only fine-tunes RM-pretrained backbones on COCO/ADE20K;
pasting inside those tasks follows the design sketch of
``recursivemix_spec.md`` §3.1 and is not from the authors.

Conventions:

* A *paste box* is four integers ``(x1, y1, x2, y2)``, half-open: columns
  ``x1:x2`` and rows ``y1:y2`` of the target image.
* A *source box* is the region of the source image that is resized into the
  paste box -- for RecursiveMix the whole valid (unpadded) area ``(0, 0, w,
  h)`` of the history image, for CutMix the paste box itself (no resize).
* Instance boxes are float ``(k, 4)`` ``xyxy`` tensors in pixel-edge
  coordinates (a box covering pixel columns ``0..9`` is ``x1=0, x2=10``), as
  in mmdet.
* The resize of :func:`paste_images` maps source pixel ``s`` to the target
  pixels ``t`` with ``floor((t - x1) * sw / bw) == s - sx1`` (``'nearest'``,
  the formula of :func:`torch.nn.functional.interpolate`), so a source box
  :math:`[a, b)` lands on target pixels :math:`[\lceil a r\rceil,
  \lceil b r\rceil)` (offset by the paste box), :math:`r = bw / sw`, while
  :func:`paste_boxes` maps it to the continuous :math:`[a r, b r]`: the two
  differ by less than one pixel.

All kernels are stateless, out of place, keep the device and dtype of their
inputs, and are vectorised over the batch (images) or the instances (boxes
and masks).
"""
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (check_box, check_float_boxes, check_fraction,
                     check_images, check_int_boxes)

__all__ = [
    'PASTE_MODES', 'paste_images', 'paste_boxes', 'occlude_boxes',
    'paste_masks', 'occlude_masks', 'box_area', 'CutMixParams'
]

#: Resize modes of :func:`paste_images`.
PASTE_MODES = ('nearest', 'nearest-exact', 'bilinear')

BoxesLike = Union[Tensor, Sequence[Sequence[int]]]
BoxLike = Union[Tensor, Sequence[int]]


class CutMixParams(NamedTuple):
    """What one CutMix step (segmentation) drew.

    Kept as ``last_params`` by :class:`~mixplugins.segmentation.SegCutMix`:
    ``paste_images(inputs, inputs[index], boxes, boxes)`` (and
    ``paste_seg`` on the label maps) reproduces its output.

    Attributes:
        boxes (Tensor): (B, 4) int64 box ``(x1, y1, x2, y2)`` of each image
            (one box per batch, repeated).
        lam (Tensor): (B,) float32 kept fraction of each image (corrected
            for the clipped box).
        index (Tensor): (B,) int64 partner whose box region is pasted.
    """
    boxes: Tensor
    lam: Tensor
    index: Tensor


def _axis_index(positions: Tensor, start: Tensor, size: Tensor,
                src_start: Tensor, src_size: Tensor, src_length: int,
                mode: str) -> Tuple[Tensor, Tensor]:
    """Source index of target positions along one axis.

    Args:
        positions (Tensor): (L,) target positions.
        start, size (Tensor): (N,) paste box start and length.
        src_start, src_size (Tensor): (N,) source box start and length.
        src_length (int): Source length along the axis.
        mode (str): ``'nearest'``, ``'nearest-exact'`` or ``'bilinear'``.

    Returns:
        tuple[Tensor, Tensor]: (N, L) source positions (long for the nearest
        modes, float32 for ``'bilinear'``), and the (N, L) bool mask of the
        positions inside the paste box.
    """
    rel = positions[None, :] - start[:, None]
    inside = (rel >= 0) & (rel < size[:, None])
    relf = rel.float()
    out_f = size.clamp(min=1).float()[:, None]
    in_f = src_size.float()[:, None]
    if mode == 'bilinear':
        # align_corners=True: the box corners sample the source corners.
        scale = torch.where(out_f > 1, (in_f - 1) / (out_f - 1).clamp(min=1),
                            torch.zeros_like(in_f))
        src = src_start[:, None].float() + relf * scale
        return src.clamp(0, src_length - 1), inside
    # float32 scale and floor, as torch's nearest upsampling kernels
    scale = in_f / out_f
    if mode == 'nearest-exact':
        src = torch.floor((relf + 0.5) * scale)
    else:
        src = torch.floor(relf * scale)
    src = torch.minimum(src.long(), src_size[:, None] - 1) + src_start[:, None]
    return src.clamp(0, src_length - 1), inside


def paste_images(inputs: Tensor,
                 sources: Tensor,
                 boxes: BoxesLike,
                 src_boxes: Optional[BoxesLike] = None,
                 mode: str = 'nearest') -> Tensor:
    r"""Resize a region of each source image into a box of each image.

    For every ``n``, ``sources[n, :, sy1:sy2, sx1:sx2]`` is resized to the
    paste box ``boxes[n]`` and replaces ``inputs[n, :, y1:y2, x1:x2]``; the
    rest of ``inputs[n]`` is kept. Each image has its own box and source box
    (vectorised, no loop over the batch; only the union of the paste boxes
    is computed). A paste box of zero area leaves its image unchanged.
    ``'nearest'`` and ``'nearest-exact'`` give exactly the pixels of
    :func:`torch.nn.functional.interpolate` on the cropped source;
    ``'bilinear'`` equals it with ``align_corners=True`` (the official
    RecursiveMix setting) up to float rounding and needs floating images.

    Args:
        inputs (Tensor): Target images (N, C, H, W); also (N, H, W) maps.
        sources (Tensor): Source images (N, C, Hs, Ws), any size; (N, Hs,
            Ws) when ``inputs`` is 3-D.
        boxes (Tensor | Sequence): (N, 4) integer paste boxes ``(x1, y1, x2,
            y2)`` inside ``(H, W)``. They are read on the host: pass lists or
            CPU tensors (a device tensor is copied, which synchronises).
        src_boxes (Tensor | Sequence, optional): (N, 4) integer source boxes
            inside ``(Hs, Ws)``; each must have a positive area where its
            paste box has one. Defaults to None (the whole source image).
        mode (str): One of :data:`PASTE_MODES`. Defaults to ``'nearest'``
            (the official RecursiveMix default).

    Returns:
        Tensor: The pasted images, shape, dtype and device of ``inputs``.
    """
    check_images('inputs', inputs, (3, 4))
    check_images('sources', sources, (inputs.dim(), ))
    if mode not in PASTE_MODES:
        raise ValueError(f'`mode` must be one of {PASTE_MODES}, got {mode!r}')
    squeeze = inputs.dim() == 3
    if squeeze:
        inputs, sources = inputs[:, None], sources[:, None]
    n, c, h, w = inputs.shape
    if sources.shape[:2] != (n, c):
        raise ValueError(f'`sources` must have batch and channel sizes '
                         f'({n}, {c}) of `inputs`, got {tuple(sources.shape)}')
    hs, ws = sources.shape[-2:]
    if mode == 'bilinear' and not inputs.is_floating_point():
        raise TypeError(f'`mode`=\'bilinear\' needs floating images, got '
                        f'{inputs.dtype}')
    box = check_int_boxes('boxes', boxes, n, h, w)
    if src_boxes is None:
        src = torch.tensor([0, 0, ws, hs]).expand(n, 4)
    else:
        src = check_int_boxes('src_boxes', src_boxes, n, hs, ws)
        empty_src = (src[:, 2] == src[:, 0]) | (src[:, 3] == src[:, 1])
        empty_dst = (box[:, 2] == box[:, 0]) | (box[:, 3] == box[:, 1])
        if bool((empty_src & ~empty_dst).any()):
            raise ValueError('`src_boxes` must have a positive area where '
                             f'`boxes` has one, got {src.tolist()} for '
                             f'{box.tolist()}')
    nonempty = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    out = inputs.clone()
    if not bool(nonempty.any()):
        return out[:, 0] if squeeze else out
    # work on the union of the paste boxes only (host ints: no device sync)
    xa, ya = (int(v) for v in box[nonempty, :2].min(0).values)
    xb, yb = (int(v) for v in box[nonempty, 2:].max(0).values)
    device = inputs.device
    # one host-to-device copy for all the box coordinates
    x1, y1, x2, y2, sx1, sy1, sx2, sy2 = torch.cat([box, src],
                                                   1).to(device).unbind(1)
    rows, in_y = _axis_index(torch.arange(ya, yb, device=device), y1, y2 - y1,
                             sy1, sy2 - sy1, hs, mode)
    cols, in_x = _axis_index(torch.arange(xa, xb, device=device), x1, x2 - x1,
                             sx1, sx2 - sx1, ws, mode)
    rh, rw = yb - ya, xb - xa
    inside = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    sources = sources.to(inputs.dtype)
    if mode == 'bilinear':
        gy = rows * (2.0 / max(hs - 1, 1)) - 1.0
        gx = cols * (2.0 / max(ws - 1, 1)) - 1.0
        gx, gy = torch.broadcast_tensors(gx[:, None, :], gy[:, :, None])
        grid = torch.stack([gx, gy], dim=-1)
        pasted = F.grid_sample(sources.float(),
                               grid,
                               mode='bilinear',
                               padding_mode='border',
                               align_corners=True)
        pasted = pasted.to(inputs.dtype)
    else:
        pasted = sources.gather(2, rows[:, None, :, None].expand(n, c, rh, ws))
        pasted = pasted.gather(3, cols[:, None, None, :].expand(n, c, rh, rw))
    region = out[:, :, ya:yb, xa:xb]
    out[:, :, ya:yb, xa:xb] = torch.where(inside, pasted, region)
    return out[:, 0] if squeeze else out


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``(k, 4)`` xyxy boxes; inverted sides count as 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def paste_boxes(hist_boxes: Tensor,
                hist_size: Tuple[int, int],
                box: BoxLike,
                src_box: Optional[BoxLike] = None) -> Tensor:
    r"""Map the boxes of a pasted image into the paste box.

    A source box ``(sx1, sy1, sx2, sy2)`` of the history image (by default
    its whole valid area ``(0, 0, w, h)``, ``(h, w) = hist_size``) is
    resized into the paste box ``(x1, y1, x2, y2)``, so a point moves to
    :math:`x' = x_1 + (x - s_{x1}) \frac{x_2 - x_1}{s_{x2} - s_{x1}}` and
    likewise for :math:`y`; the moved boxes are then clipped to the paste
    box (parts outside the source box were not pasted). Boxes that end up
    with zero width or height are returned as such; the caller drops them
    (see :func:`box_area`).

    Args:
        hist_boxes (Tensor): Float (k, 4) xyxy boxes in the history image.
        hist_size (tuple[int, int]): Valid ``(h, w)`` of the history image,
            both >= 1.
        box (Sequence[int] | Tensor): Paste box ``(x1, y1, x2, y2)`` in the
            current image.
        src_box (Sequence[int] | Tensor, optional): Region of the history
            image that was pasted. Defaults to None (``(0, 0, w, h)``).

    Returns:
        Tensor: (k, 4) boxes in the current image, dtype and device of
        ``hist_boxes``.
    """
    check_float_boxes('hist_boxes', hist_boxes)
    try:
        h, w = (int(v) for v in hist_size)
    except (TypeError, ValueError):
        raise ValueError('`hist_size` must be (h, w), got '
                         f'{hist_size!r}') from None
    if h < 1 or w < 1:
        raise ValueError(f'`hist_size` must be >= 1, got {(h, w)}')
    x1, y1, x2, y2 = check_box('box', box)
    sx1, sy1, sx2, sy2 = check_box('src_box',
                                    (0, 0, w,
                                     h) if src_box is None else src_box)
    if sx2 == sx1 or sy2 == sy1:
        raise ValueError(f'`src_box` must have a positive area, got '
                         f'{(sx1, sy1, sx2, sy2)}')
    rx, ry = (x2 - x1) / (sx2 - sx1), (y2 - y1) / (sy2 - sy1)
    xs = ((hist_boxes[:, 0::2] - sx1) * rx + x1).clamp(x1, x2)
    ys = ((hist_boxes[:, 1::2] - sy1) * ry + y1).clamp(y1, y2)
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)


def occlude_boxes(boxes: Tensor, box: BoxLike,
                  min_visible: float) -> Tuple[Tensor, Tensor]:
    r"""Clip boxes by an opaque paste box; flag the ones to keep.

    Each box :math:`A` becomes the bounding box of its visible part
    :math:`A \setminus P` (:math:`P` = the paste box):

    * no overlap: unchanged;
    * :math:`P` spans :math:`A` along one axis and covers one end of the
      other axis (a side strip is hidden): the visible part is a rectangle
      and the box shrinks to it;
    * any other partial overlap (a corner, a notch, a hole, a band through
      the middle): the visible part still touches all four sides of
      :math:`A`, so the box is unchanged;
    * :math:`A \subseteq P`: fully covered, always dropped.

    A box is kept iff it is not fully covered and its visible area fraction
    :math:`v = 1 - |A \cap P| / |A|` is at least ``min_visible`` (measured
    on the true visible area, not on the clipped box). Boxes of zero area
    have :math:`v = 1` unless they lie inside :math:`P`.

    Args:
        boxes (Tensor): Float (k, 4) xyxy boxes of the current image.
        box (Sequence[int] | Tensor): Paste box ``(x1, y1, x2, y2)``.
        min_visible (float): Smallest visible area fraction to keep a box,
            in [0, 1].

    Returns:
        tuple[Tensor, Tensor]: The clipped (k, 4) boxes (dtype and device of
        ``boxes``, dropped rows included) and the (k,) bool ``keep`` mask.
    """
    check_float_boxes('boxes', boxes)
    px1, py1, px2, py2 = check_box('box', box)
    min_visible = check_fraction('min_visible', min_visible)
    ax1, ay1, ax2, ay2 = boxes.unbind(1)
    if px2 == px1 or py2 == py1 or boxes.shape[0] == 0:
        return boxes.clone(), boxes.new_ones(boxes.shape[0], dtype=torch.bool)
    covered = (ax1 >= px1) & (ay1 >= py1) & (ax2 <= px2) & (ay2 <= py2)
    iw = (ax2.clamp(max=px2) - ax1.clamp(min=px1)).clamp(min=0)
    ih = (ay2.clamp(max=py2) - ay1.clamp(min=py1)).clamp(min=0)
    area = box_area(boxes)
    visible = torch.where(area > 0, 1 - iw * ih / area.clamp(min=1e-12),
                          torch.ones_like(area))
    keep = ~covered & (visible >= min_visible)
    # P spans A horizontally: a strip at the top / bottom may be hidden.
    span_x = (px1 <= ax1) & (ax2 <= px2) & (iw > 0)
    span_y = (py1 <= ay1) & (ay2 <= py2) & (ih > 0)
    ny1 = ay1.masked_fill(span_x & (py1 <= ay1) & (py2 > ay1), py2)
    ny2 = ay2.masked_fill(span_x & (py2 >= ay2) & (py1 < ay2), py1)
    nx1 = ax1.masked_fill(span_y & (px1 <= ax1) & (px2 > ax1), px2)
    nx2 = ax2.masked_fill(span_y & (px2 >= ax2) & (px1 < ax2), px1)
    out = torch.stack([nx1, ny1, nx2, ny2], dim=1)
    # fully covered boxes would come out inverted: leave them as they were
    out = torch.where(covered[:, None], boxes, out)
    return out, keep


def paste_masks(hist_masks: Tensor,
                hist_size: Tuple[int, int],
                box: BoxLike,
                out_size: Tuple[int, int],
                src_box: Optional[BoxLike] = None,
                mode: str = 'nearest') -> Tensor:
    """Resize instance masks of the history image into the paste box.

    The source box of each (k, Hs, Ws) mask (by default the valid area
    ``(0, 0, w, h)``, ``(h, w) = hist_size``) is resized with the nearest
    rule of :func:`paste_images` (so mask pixels land exactly where the
    image pixels land) into the paste box of an all-zero ``out_size``
    canvas.

    Args:
        hist_masks (Tensor): (k, Hs, Ws) masks (bool or integer), ``Hs >=
            h`` and ``Ws >= w``.
        hist_size (tuple[int, int]): Valid ``(h, w)`` of the history image.
        box (Sequence[int] | Tensor): Integer paste box ``(x1, y1, x2,
            y2)`` inside ``out_size``.
        out_size (tuple[int, int]): ``(H, W)`` of the current masks.
        src_box (Sequence[int] | Tensor, optional): Pasted region of the
            history image. Defaults to None (``(0, 0, w, h)``).
        mode (str): ``'nearest'`` or ``'nearest-exact'``, the same as the
            image paste. Defaults to ``'nearest'``.

    Returns:
        Tensor: (k, H, W) masks, dtype and device of ``hist_masks``.
    """
    check_images('hist_masks', hist_masks, (3, ))
    if mode not in PASTE_MODES[:2]:
        raise ValueError(f'`mode` must be one of {PASTE_MODES[:2]}, got '
                         f'{mode!r}')
    h, w = (int(v) for v in hist_size)
    k, hs, ws = hist_masks.shape
    if not (1 <= h <= hs and 1 <= w <= ws):
        raise ValueError(f'`hist_size` {(h, w)} must be within the mask size '
                         f'{(hs, ws)}')
    oh, ow = (int(v) for v in out_size)
    src = [0, 0, w, h] if src_box is None else [int(v) for v in src_box]
    dst = check_int_boxes('box', [[int(v) for v in box]], 1, oh, ow)[0]
    check_int_boxes('src_box', [src], 1, h, w)
    canvas = hist_masks.new_zeros((k, oh, ow))
    x1, y1, x2, y2 = dst.tolist()
    if k == 0 or x2 == x1 or y2 == y1:
        return canvas
    sx1, sy1, sx2, sy2 = (torch.tensor([v], device=hist_masks.device)
                          for v in src)
    zero = torch.zeros_like(sx1)
    rows, _ = _axis_index(torch.arange(y2 - y1, device=zero.device), zero,
                          zero + (y2 - y1), sy1, sy2 - sy1, hs, mode)
    cols, _ = _axis_index(torch.arange(x2 - x1, device=zero.device), zero,
                          zero + (x2 - x1), sx1, sx2 - sx1, ws, mode)
    canvas[:, y1:y2, x1:x2] = hist_masks[:, rows[0]][:, :, cols[0]]
    return canvas


def occlude_masks(masks: Tensor, box: BoxLike) -> Tensor:
    """Zero the paste box in (k, H, W) instance masks (out of place).

    Args:
        masks (Tensor): (k, H, W) masks of the current image.
        box (Sequence[int] | Tensor): Integer paste box ``(x1, y1, x2,
            y2)``; parts outside the masks are ignored.

    Returns:
        Tensor: Masks with the box zeroed, dtype and device of ``masks``.
    """
    check_images('masks', masks, (3, ))
    x1, y1, x2, y2 = (int(v) for v in box)
    out = masks.clone()
    out[:, max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0
    return out
