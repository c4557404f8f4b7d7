r"""R-Mix's clean pass: the saliency of every pixel.

R-Mix (`Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_, Luu et al., AAAI'23
Practical-DL workshop; official code:
https://github.com/minhlong94/Random-Mixup) thresholds the input gradient of
the cross-entropy on the clean batch (``rmix_spec.md`` §1).
:func:`input_saliency` is that pass -- the one that
:class:`~mixplugins.classification.RMix` and
:class:`~mixplugins.classification.RLMix` run -- and
:func:`saliency_from_grad` reduces a gradient to one map per image. The
masks and the mix are in :mod:`mixplugins.core.rmix`.
"""
import math
from typing import Callable, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_images, check_number

__all__ = [
    'input_saliency', 'saliency_from_grad', 'saliency_size',
    'FP16_LOSS_SCALES'
]


def saliency_from_grad(grad: Tensor) -> Tensor:
    r"""Reduce an input gradient to a saliency map.

    :math:`s_{b,h,w} = \sqrt{\frac{1}{C}\sum_c g_{b,c,h,w}^2}`, the RMS over
    channels as in the official ``compute_saliency``; computed in float32 and
    returned in ``grad``'s dtype.

    Args:
        grad (Tensor): Input gradient of shape (B, C, H, W).

    Returns:
        Tensor: Saliency of shape (B, H, W).
    """
    check_images('grad', grad)
    return grad.float().square().mean(1).sqrt().to(grad.dtype)


#: Loss scales of the clean pass when it runs in float16 (autocast or a
#: half model), tried in this order until the input gradient is finite:
#: ``torch.amp.GradScaler``'s initial scale, then 2**8 times smaller each
#: time. See :func:`input_saliency`.
FP16_LOSS_SCALES = (2.0**16, 2.0**8, 1.0, 2.0**-8)


def saliency_size(height: int, width: int,
                  scale_factor: float) -> Tuple[int, int]:
    """Size ``(h, w)`` of the clean pass on (H, W) images resized by
    ``scale_factor``: ``H * scale_factor`` and ``W * scale_factor`` rounded
    to the nearest integer (halves up), at least 1.

    Args:
        height (int): H.
        width (int): W.
        scale_factor (float): In (0, 1].

    Returns:
        tuple[int, int]: ``(h, w)``; ``(H, W)`` for ``scale_factor = 1``.
    """
    check_number('scale_factor', scale_factor, 0.0, 1.0, low_open=True)
    return (max(1, math.floor(height * scale_factor + 0.5)),
            max(1, math.floor(width * scale_factor + 0.5)))


def _uses_float16(inputs: Tensor, logits: Tensor) -> bool:
    """Whether the clean pass ran (partly) in float16, whose range flushes
    small gradients to 0: float16 inputs or logits, or float16 autocast on
    the inputs' device."""
    if torch.float16 in (inputs.dtype, logits.dtype):
        return True
    device = inputs.device.type
    return (torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.float16)


def _input_grad(loss: Tensor, x: Tensor, loss_scales: Sequence[float],
                retain_graph: bool) -> Tensor:
    """``d loss / d x`` in float32, back-propagated from ``loss * s`` for
    the first ``s`` of ``loss_scales`` that gives a finite gradient, then
    divided by ``s`` (a power of two: exact). Non-finite entries that remain
    after the last scale (or a non-finite loss) are left to the caller."""
    grad = None
    for i, s in enumerate(loss_scales):
        last = i == len(loss_scales) - 1
        (grad, ) = torch.autograd.grad(
            loss,
            x,
            grad_outputs=None if s == 1 else torch.full_like(loss, s),
            retain_graph=retain_graph or not last)
        grad = grad.float()
        if s != 1:
            grad = grad / s
        # The checks synchronise with the device; they run only when a
        # retry is possible (float16), as GradScaler's overflow check.
        if last or bool(torch.isfinite(grad).all()):
            break
        if not bool(torch.isfinite(loss)):
            break  # no scale helps a non-finite loss
    return grad


def input_saliency(forward: Callable[[Tensor], Tensor],
                   inputs: Tensor,
                   labels: Tensor,
                   *,
                   scale_factor: float = 1.0,
                   return_logits: bool = False,
                   return_loss: bool = False
                   ) -> Union[Tensor, Tuple[Tensor, ...]]:
    r"""Saliency of each pixel: the input gradient of the clean-batch loss.

    :math:`L = \frac{1}{B}\sum_b \mathrm{CE}(f(x)_b, y_b)` and the saliency is
    :func:`saliency_from_grad` of :math:`\partial L / \partial x`. The
    gradient is taken with :func:`torch.autograd.grad` with respect to the
    inputs only, so no parameter ``.grad`` is created or changed and no
    ``AccumulateGrad`` (or DDP reducer) hook fires. The official code runs a
    full ``loss.backward()`` and discards the parameter gradients; the
    saliency is the same, the weight-gradient kernels are skipped.

    This is the clean pass that :class:`~mixplugins.classification.RMix`
    and :class:`~mixplugins.classification.RLMix` run.

    Note:
        **float16.** When the pass runs in float16 (``torch.autocast`` with
        ``dtype=torch.float16``, float16 inputs or a float16 model), the
        per-pixel gradients of a mean loss are small enough to underflow in
        the float16 backward (most pixels exactly 0 on a network whose
        logits are still near uniform). The gradient is then taken of the
        loss scaled by a power of two and divided by it in float32 (as the
        official ImageNet code's apex loss scale), dynamically: the scales of
        :data:`FP16_LOSS_SCALES` (2**16, 2**8, 1, 2**-8) are tried in turn
        until the gradient is finite (the forward runs once; a retry is one
        more backward). This check synchronises with the device once per
        call, in float16 only. float32 and bfloat16 (float32's exponent
        range) take the gradient unscaled, without a synchronisation.
        Gradient entries that are still non-finite (a diverged model) count
        as saliency 0, so no NaN or inf reaches the masks.

        **scale_factor < 1** (an option beyond the paper): the pass runs on
        the images resized to :func:`saliency_size` (bilinear, antialiased,
        computed in float32), and the saliency has that size. The pass costs
        about ``scale_factor ** 2`` of the full one, but it is the saliency
        of smaller images, which a network trained at one scale treats
        differently: the masks move (measured in
        ``benchmarks/rmix_saliency.py``).

    Args:
        forward (Callable[[Tensor], Tensor]): Maps inputs (B, C, H, W) to
            logits (B, K). Its mode (train/eval BN) is the caller's choice.
        inputs (Tensor): Normalised images of shape (B, C, H, W).
        labels (Tensor): Integer class indices of shape (B,).
        scale_factor (float): Resize factor of the images for the pass, in
            (0, 1]; 1 runs on the images as they are (the official
            algorithm). Defaults to 1.0.
        return_logits (bool): Also return the (detached) clean logits, e.g.
            for RL-Mix's observation. Defaults to False.
        return_loss (bool): Also return the clean loss, still attached to
            the graph (which is then kept), e.g. to add it to the training
            loss (R-Mix's ``clean_loss_weight``); it is never scaled.
            Defaults to False.

    Returns:
        Tensor | tuple[Tensor, ...]: Saliency (B, h, w), finite and
        non-negative, with ``(h, w) = saliency_size(H, W, scale_factor)``,
        in ``inputs``' dtype (float32 for float16 inputs, whose range would
        flush it to 0); with ``return_logits`` and/or ``return_loss`` a
        tuple ``(saliency[, logits][, loss])``: logits (B, K), loss a
        float32 scalar.
    """
    check_images('inputs', inputs)
    if (not isinstance(labels, Tensor) or labels.dim() != 1
            or labels.dtype.is_floating_point or labels.dtype == torch.bool):
        raise ValueError('`labels` must be an integer tensor of shape (B,), '
                         f'got {getattr(labels, "shape", labels)!r}')
    if labels.shape[0] != inputs.shape[0]:
        raise ValueError(f'`labels` has {labels.shape[0]} entries but '
                         f'`inputs` has batch size {inputs.shape[0]}')
    size = saliency_size(*inputs.shape[-2:], scale_factor)
    x = inputs.detach()
    if size != tuple(x.shape[-2:]):
        # Antialiased bilinear has no half-precision CPU kernel; float32 is
        # also what autocast runs ``interpolate`` in.
        x = F.interpolate(x.float(),
                          size=size,
                          mode='bilinear',
                          align_corners=False,
                          antialias=True).to(x.dtype)
    x.requires_grad_(True)
    with torch.enable_grad():
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), labels)
        scales = FP16_LOSS_SCALES if _uses_float16(x, logits) else (1.0, )
        grad = _input_grad(loss, x, scales, return_loss)
    dtype = torch.float32 if inputs.dtype == torch.float16 else inputs.dtype
    saliency = saliency_from_grad(grad).nan_to_num_(0.0, 0.0, 0.0)
    out = (saliency.to(dtype), )
    if return_logits:
        out += (logits.detach(), )
    if return_loss:
        out += (loss, )
    return out if len(out) > 1 else out[0]
