r"""Segmentation-map paste for RecursiveMix and CutMix in segmentation.

RecursiveMix (`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_, Yang et al., NeurIPS 2022) and CutMix
(`CutMix <https://arxiv.org/abs/1905.04899>`_, Yun et al., ICCV 2019) paste
an image region into a box; in segmentation the label map must move with
the pixels. :func:`paste_seg` resizes label maps with the same nearest
index rule as :func:`~mixplugins.core.boxes.paste_images`, so every mixed
pixel keeps the label of the source pixel it was copied from; labels are
never blended, so the ignore index and the padding value stay what they
were (``recursivemix_spec.md`` §3.1).
"""
from typing import Optional

from torch import Tensor

from .boxes import PASTE_MODES, BoxesLike, paste_images

__all__ = ['paste_seg']


def paste_seg(seg: Tensor,
              sources: Tensor,
              boxes: BoxesLike,
              src_boxes: Optional[BoxesLike] = None,
              mode: str = 'nearest') -> Tensor:
    """Resize a region of each source label map into a box of each map.

    For every ``n``, the source box ``src_boxes[n]`` of ``sources[n]`` is
    resized with nearest neighbours into ``boxes[n]`` of ``seg[n]``; the
    rest of ``seg[n]`` (its padding included) is kept. Use the same
    ``boxes``, ``src_boxes`` and ``mode`` as the image paste
    (:func:`~mixplugins.core.boxes.paste_images` with ``'nearest'`` or
    ``'nearest-exact'``; pass ``'nearest'`` when the images are pasted
    ``'bilinear'``) to keep labels aligned with pixels.

    Args:
        seg (Tensor): Label maps (N, H, W) or (N, 1, H, W), any dtype.
        sources (Tensor): Source maps (N, Hs, Ws) or (N, 1, Hs, Ws), the
            same number of dimensions as ``seg``.
        boxes (Tensor | Sequence): (N, 4) integer paste boxes ``(x1, y1,
            x2, y2)`` inside ``(H, W)``.
        src_boxes (Tensor | Sequence, optional): (N, 4) integer source
            boxes inside ``(Hs, Ws)``. Defaults to None (the whole maps).
        mode (str): ``'nearest'`` or ``'nearest-exact'``. Defaults to
            ``'nearest'``.

    Returns:
        Tensor: Pasted maps, shape, dtype and device of ``seg``.
    """
    if mode not in PASTE_MODES[:2]:
        raise ValueError(f'`mode` must be one of {PASTE_MODES[:2]} (labels '
                         f'are never interpolated), got {mode!r}')
    if isinstance(seg, Tensor) and seg.dim() == 4 and seg.shape[1] != 1:
        raise ValueError('`seg` must be (N, H, W) or (N, 1, H, W), got '
                         f'{tuple(seg.shape)}')
    return paste_images(
        seg,
        sources.to(seg.dtype) if isinstance(sources, Tensor) else sources,
        boxes, src_boxes, mode)
