r"""RecursiveMix kernels: paste box, history paste, RoI pooling, consistency.

RecursiveMix was proposed in `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022); official
code: https://github.com/implus/RecursiveMix-pytorch.

One step (``../shared/reference/recursivemix_spec.md`` §1.2): the previous
step's *mixed* batch (the history) is resized into one random box of the
current batch (:func:`sample_box`, :func:`paste_history`); labels are mixed by
the visible area :math:`\lambda`; the last feature map is RoI-aligned over the
box (:func:`roi_pool_box`) and a second linear head is trained to predict the
history's (detached) softmax there (:func:`consistency_loss`).
"""
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_int_boxes, check_paste_alpha
from .sampling import rand_bbox, sample_uniform

__all__ = [
    'Box', 'RecursiveMixParams', 'sample_box', 'paste_history',
    'consistency_loss', 'roi_pool_box', 'check_paste_alpha',
    'INTERPOLATION_MODES'
]

#: ``(x1, y1, x2, y2)`` in pixels, half-open: columns ``x1:x2``, rows
#: ``y1:y2``.
Box = Tuple[int, int, int, int]

#: Resize modes accepted by :func:`paste_history`.
INTERPOLATION_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic',
                       'area')


class RecursiveMixParams(NamedTuple):
    """What one RecursiveMix step drew: the paste of each image.

    Kept as ``last_params`` by the classification, detection and
    segmentation ``RecursiveMix``. When nothing was pasted (empty history,
    the first step of an epoch) the boxes are all zero, ``lam`` is 1 and
    ``index`` is ``arange(B)``.

    Attributes:
        boxes (Tensor): (B, 4) int64 paste boxes ``(x1, y1, x2, y2)`` in the
            current images (classification: one box repeated B times).
        lam (Tensor): (B,) float32 visible fraction of each current image
            (of its valid area ``img_shape`` in detection/segmentation).
        index (Tensor): (B,) int64 history row pasted into each image (the
            history is cycled when it is smaller than the batch).
        src_boxes (Tensor): (B, 4) int64 region of that history image that
            was resized into the box (its whole valid area).
    """
    boxes: Tensor
    lam: Tensor
    index: Tensor
    src_boxes: Tensor


def sample_box(height: Union[int, Tensor],
               width: Union[int, Tensor],
               alpha: float,
               generator: Optional[torch.Generator] = None,
               *,
               count: Optional[int] = None) -> Union[Box, Tensor]:
    r"""Draw RecursiveMix's paste box (the official ``rand_bbox``).

    The nominal area fraction is :math:`u \sim U(0, \alpha)` (not a Beta
    draw); the box is :func:`~mixplugins.core.sampling.rand_bbox` of that
    area: each side :math:`\lfloor \text{side} \cdot \sqrt{u} \rfloor`, the
    centre uniform over the pixels, clipped to the image on each axis (so it
    can be smaller, non-square, or empty at the borders).

    Args:
        height (int | Tensor): Image height H >= 1 (or (count,) heights).
        width (int | Tensor): Image width W >= 1 (or (count,) widths).
        alpha (float): Maximum nominal area fraction, in (0, 1].
        generator (torch.Generator, optional): CPU generator. Defaults to
            None (the global RNG).
        count (int, optional): Number of boxes, each with its own ``u``.
            Defaults to None (one box).

    Returns:
        tuple[int, int, int, int] | Tensor: ``(x1, y1, x2, y2)`` with
        ``0 <= x1 <= x2 <= W`` and ``0 <= y1 <= y2 <= H``; a (count, 4)
        int64 tensor when ``count`` is given.
    """
    alpha = check_paste_alpha(alpha)
    size = () if count is None else (count, )
    area = sample_uniform(0.0, alpha, size, generator=generator)
    boxes = rand_bbox(height, width, area, count=count, generator=generator)
    if count is None:
        return tuple(int(v) for v in boxes)
    return boxes


def paste_history(inputs: Tensor,
                  targets: Tensor,
                  hist_inputs: Tensor,
                  hist_targets: Tensor,
                  box: Sequence[int],
                  mode: str = 'nearest') -> Tuple[Tensor, Tensor, float]:
    r"""Resize the history batch into ``box`` of the current batch.

    History image ``b`` (the whole image, resized -- not cropped) replaces
    the box of current image ``b``, for ``b < B``. With the visible fraction
    :math:`\lambda = 1 - \frac{(x_2-x_1)(y_2-y_1)}{HW}` the targets become
    :math:`\lambda y + (1-\lambda) y^{hist}`. Since the history is itself a
    mixed batch, an image pasted k steps ago keeps exactly the label weight
    of its visible area. A box of zero area returns a copy with
    :math:`\lambda = 1`. Always out of place.

    Args:
        inputs (Tensor): Current images (B, C, H, W).
        targets (Tensor): Current float targets (B, K).
        hist_inputs (Tensor): History images (B', C, H', W'), ``B' >= B``;
            any size (they are resized).
        hist_targets (Tensor): History float targets (B', K).
        box (Sequence[int]): ``(x1, y1, x2, y2)`` inside the current image.
        mode (str): Resize mode of :func:`torch.nn.functional.interpolate`:
            one of :data:`INTERPOLATION_MODES`; ``'bilinear'``/``'bicubic'``
            use ``align_corners=True`` as the official code. Defaults to
            ``'nearest'`` (the official default).

    Returns:
        tuple[Tensor, Tensor, float]: Mixed images (B, C, H, W), mixed
        targets (B, K) and ``lam``.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise ValueError('`inputs` must be a (B, C, H, W) tensor, got '
                         f'{getattr(inputs, "shape", inputs)!r}')
    b, c, h, w = inputs.shape
    if (not isinstance(hist_inputs, Tensor) or hist_inputs.dim() != 4
            or hist_inputs.shape[1] != c):
        raise ValueError(f'`hist_inputs` must be a (B\', {c}, H\', W\') '
                         f'tensor, got {getattr(hist_inputs, "shape", None)}')
    if hist_inputs.shape[0] < b:
        raise ValueError(f'`hist_inputs` has batch size {hist_inputs.shape[0]}'
                         f' < the current batch size {b}')
    for name, t, n in (('targets', targets, b),
                       ('hist_targets', hist_targets, hist_inputs.shape[0])):
        if (not isinstance(t, Tensor) or t.dim() != 2
                or not t.dtype.is_floating_point or t.shape[0] != n):
            raise ValueError(f'`{name}` must be a float ({n}, K) tensor, got '
                             f'{getattr(t, "shape", t)!r}')
    if hist_targets.shape[1] != targets.shape[1]:
        raise ValueError(f'`hist_targets` has {hist_targets.shape[1]} classes'
                         f' but `targets` has {targets.shape[1]}')
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f'`mode` must be one of {INTERPOLATION_MODES}, got '
                         f'{mode!r}')
    x1, y1, x2, y2 = check_int_boxes('box', [box], 1, h, w)[0].tolist()
    mixed = inputs.clone()
    bh, bw = y2 - y1, x2 - x1
    if bh == 0 or bw == 0:
        return mixed, targets.clone(), 1.0
    kwargs = dict(align_corners=True) if mode in ('bilinear',
                                                  'bicubic') else {}
    mixed[:, :, y1:y2, x1:x2] = F.interpolate(
        hist_inputs[:b].to(inputs), size=(bh, bw), mode=mode, **kwargs)
    lam = 1.0 - (bh * bw) / (h * w)
    mixed_targets = lam * targets + (1.0 - lam) * hist_targets[:b].to(targets)
    return mixed, mixed_targets, lam


def consistency_loss(roi_logits: Tensor, hist_logits: Tensor,
                     lam: Union[float, Tensor], omega: float) -> Tensor:
    r"""RecursiveMix's consistency loss.

    :math:`\omega (1-\lambda) \frac{1}{B}\sum_b \sum_k
    -\mathrm{softmax}(z^{hist}_b)_k \log\mathrm{softmax}(z^{roi}_b)_k`,
    a soft cross-entropy (temperature 1) of the RoI logits against the
    detached softmax of the history logits; computed in float32.

    Args:
        roi_logits (Tensor): Logits of the RoI head, (B, K).
        hist_logits (Tensor): Logits the main head gave the history images
            at the previous step, (B, K); detached here.
        lam (float | Tensor): Visible fraction of the current images.
        omega (float): Loss weight :math:`\omega`, >= 0.

    Returns:
        Tensor: Scalar float32 loss.
    """
    if roi_logits.dim() != 2 or roi_logits.shape != hist_logits.shape:
        raise ValueError('`roi_logits` and `hist_logits` must both be (B, K) '
                         f'tensors, got {tuple(roi_logits.shape)} and '
                         f'{tuple(hist_logits.shape)}')
    if not omega >= 0:
        raise ValueError(f'`omega` must be >= 0, got {omega!r}')
    target = F.softmax(hist_logits.detach().float(), dim=-1)
    ce = -(target * F.log_softmax(roi_logits.float(), dim=-1)).sum(-1).mean()
    return omega * (1 - lam) * ce


def roi_pool_box(features: Tensor, box: Union[Sequence[int], Tensor],
                 input_size: Tuple[int, int]) -> Tensor:
    """Average the last feature map over the paste box (1x1 RoIAlign).

    :func:`torchvision.ops.roi_align` with ``output_size=1``,
    ``aligned=True``, adaptive sampling (``sampling_ratio=-1``) and
    ``spatial_scale = feature width / input width``, as the official code.
    Box coordinates are input pixels. Computed in float32 (torchvision's
    autocast policy for this op) and returned in ``features``' dtype.

    Args:
        features (Tensor): Last feature map (B, C, h, w).
        box (Sequence[int] | Tensor): One box ``(x1, y1, x2, y2)`` for the
            whole batch, or a (B, 4) tensor of per-image boxes.
        input_size (tuple[int, int]): Input (H, W) the boxes refer to.

    Returns:
        Tensor: Pooled features (B, C).
    """
    from torchvision.ops import roi_align

    if not isinstance(features, Tensor) or features.dim() != 4:
        raise ValueError('`features` must be a 4-D (B, C, h, w) feature map, '
                         f'got {getattr(features, "shape", features)!r}')
    b = features.shape[0]
    boxes = torch.as_tensor(box, dtype=torch.float32,
                            device=features.device)
    if boxes.shape == (4, ):
        boxes = boxes.expand(b, 4)
    if boxes.shape != (b, 4):
        raise ValueError(f'`box` must be 4 numbers or a ({b}, 4) tensor, got '
                         f'{tuple(boxes.shape)}')
    index = torch.arange(b, device=features.device, dtype=torch.float32)
    rois = torch.cat([index[:, None], boxes], dim=1)
    scale = features.shape[-1] / float(input_size[1])
    pooled = roi_align(features.float(), rois, output_size=1,
                       spatial_scale=scale, sampling_ratio=-1, aligned=True)
    return pooled.flatten(1).to(features.dtype)
