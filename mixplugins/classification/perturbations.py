r"""The perturbations of the robustness evaluation: ImageNet-C corruptions,
occlusion patches, FGSM and PGD, and the pixel-space classifier they attack.

Used by :mod:`mixplugins.classification.robustness` (which documents the
protocol, the papers and the libraries, and re-exports these names).
"""
import importlib
from types import ModuleType
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple)

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_choice, check_int, check_number

__all__ = [
    'CORRUPTIONS', 'SEVERITIES', 'import_imagecorruptions', 'corrupt_images',
    'occlusion_boxes', 'occlude_images', 'fgsm', 'pgd', 'PixelClassifier',
    'dataloader_batches', 'CachedCorruptions'
]

#: The 15 ImageNet-C corruptions, in the benchmark's order (noise, blur,
#: weather, digital).
CORRUPTIONS: Tuple[str, ...] = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
    'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
    'brightness', 'contrast', 'elastic_transform', 'pixelate',
    'jpeg_compression')
#: ImageNet-C's severities.
SEVERITIES: Tuple[int, ...] = (1, 2, 3, 4, 5)

_EXTRA_HINT = ('the corruptions need imagecorruptions-imaug: `pip install '
               'mixplugins[eval]` (or `pip install imagecorruptions-imaug`; '
               'the original imagecorruptions 1.1.2 fails on NumPy 2)')
# corruptions of imagecorruptions-imaug that take a `seed` argument; the
# others draw from NumPy's global generator (seeded around each call)
_SEEDED = ('glass_blur', 'impulse_noise')


def import_imagecorruptions() -> ModuleType:
    """Import ``imagecorruptions`` (the -imaug fork); raise an
    ``ImportError`` naming the ``eval`` extra when it is missing or is the
    original package that fails on NumPy 2."""
    try:
        module = importlib.import_module('imagecorruptions')
    except ImportError as e:
        raise ImportError(f'{_EXTRA_HINT} ({e})') from e
    import inspect
    glass = getattr(module, 'glass_blur', None)
    if glass is None or 'seed' not in inspect.signature(glass).parameters:
        raise ImportError(f'{_EXTRA_HINT}: the installed imagecorruptions '
                          'is the original package')
    return module


def _seed(*keys: int) -> int:
    """A 31-bit seed derived from integer keys (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(
        1, np.uint32)[0] >> 1)


def _check_indices(indices: Any, n: int) -> List[int]:
    indices = [int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
    if len(indices) != n:
        raise ValueError(f'`indices` must have one entry per image ({n}), '
                         f'got {len(indices)}')
    return indices


def corrupt_images(images: Tensor,
                   corruption: str,
                   severity: int,
                   indices: Sequence[int],
                   seed: int = 0) -> Tensor:
    """Apply one ImageNet-C corruption to a batch of RGB images.

    Image ``i`` is corrupted with NumPy's generators seeded from ``(seed,
    corruption, severity, indices[i])``, so the result does not depend on
    the batch it is in. NumPy's global random state is restored after.

    Args:
        images (Tensor): (N, C, H, W) uint8 RGB (or grey, C = 1) images,
            H and W >= 32 (imagecorruptions' minimum).
        corruption (str): One of :data:`CORRUPTIONS`.
        severity (int): 1..5.
        indices (Sequence[int]): (N,) positions of the images in the test
            set.
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        Tensor: The corrupted images, same shape, dtype uint8, device.
    """
    check_choice('corruption', corruption, CORRUPTIONS)
    severity = check_int('severity', severity, 1, 5)
    seed = check_int('seed', seed, 0)
    if (not isinstance(images, Tensor) or images.dim() != 4
            or images.dtype != torch.uint8 or images.shape[1] not in (1, 3)):
        shape = (f'{tuple(images.shape)} {images.dtype}' if isinstance(
            images, Tensor) else type(images).__name__)
        raise ValueError('`images` must be an (N, 1 or 3, H, W) uint8 '
                         f'tensor, got {shape}')
    if min(images.shape[-2:]) < 32:
        raise ValueError('the ImageNet-C corruptions need images of at '
                         f'least 32 x 32 pixels, got {tuple(images.shape)}')
    indices = _check_indices(indices, images.shape[0])
    module = import_imagecorruptions()
    k = CORRUPTIONS.index(corruption)
    grey = images.shape[1] == 1
    arrays = images.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty(arrays.shape[:3] + (3, ), dtype=np.uint8)
    state = np.random.get_state()
    try:
        for j, (array, index) in enumerate(zip(arrays, indices)):
            s = _seed(seed, k, severity, index)
            np.random.seed(s)
            kwargs = dict(seed=s) if corruption in _SEEDED else {}
            out[j] = module.corrupt(array[..., 0] if grey else array,
                                    severity=severity,
                                    corruption_name=corruption,
                                    **kwargs)
    finally:
        np.random.set_state(state)
    result = torch.from_numpy(out).permute(0, 3, 1, 2)
    if grey:
        result = result[:, :1]
    return result.contiguous().to(images.device)


class CachedCorruptions:
    """:func:`corrupt_images` with its results kept in memory.

    The corrupted test images depend only on the images, the corruption,
    the severity, the positions and the seed -- not on the model -- so
    scripts that evaluate several models on one test set (the demo, the
    multi-seed benchmark) corrupt it once. Pass an instance as
    ``corrupt`` to :func:`evaluate_robustness`; the batches must be the
    same (same order) every time.
    """

    def __init__(self) -> None:
        self._cache: Dict[Tuple[str, int, int, int, int], Tensor] = {}

    def __call__(self, images: Tensor, corruption: str, severity: int,
                 indices: Sequence[int], seed: int = 0) -> Tensor:
        first = int(indices[0]) if len(indices) else -1
        key = (corruption, int(severity), first, len(indices), int(seed))
        if key not in self._cache:
            self._cache[key] = corrupt_images(images, corruption, severity,
                                              indices, seed)
        return self._cache[key]


def occlusion_boxes(height: int, width: int, size: int,
                    indices: Sequence[int], seed: int = 0) -> Tensor:
    """One random ``size x size`` box per image, inside the image.

    The top-left corner of image ``i`` is uniform over the positions that
    keep the box inside, drawn from ``(seed, size, indices[i])``.

    Args:
        height (int): Image height.
        width (int): Image width.
        size (int): Side of the square, 1 <= size <= min(height, width).
        indices (Sequence[int]): (N,) positions of the images in the test
            set.
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        Tensor: (N, 4) int64 boxes ``x1, y1, x2, y2`` (x2, y2 exclusive).
    """
    size = check_int('size', size, 1, min(height, width))
    indices = [int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
    corners = [
        np.random.default_rng(_seed(seed, size, index)).integers(
            0, (width - size + 1, height - size + 1)) for index in indices
    ]
    xy = torch.as_tensor(np.array(corners, dtype=np.int64)).reshape(-1, 2)
    return torch.cat([xy, xy + size], dim=1)


def occlude_images(images: Tensor, boxes: Tensor, fill: Tensor) -> Tensor:
    """Fill one box per image with ``fill`` (out of place).

    Args:
        images (Tensor): (N, C, H, W) images.
        boxes (Tensor): (N, 4) integer boxes ``x1, y1, x2, y2`` (exclusive
            ends).
        fill (Tensor): (C,) values written inside the boxes.

    Returns:
        Tensor: Occluded images, same shape, dtype and device.
    """
    n, c, h, w = images.shape
    boxes = boxes.to(images.device)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    inside = ((ys >= boxes[:, 1].view(n, 1, 1)) &
              (ys < boxes[:, 3].view(n, 1, 1)) &
              (xs >= boxes[:, 0].view(n, 1, 1)) &
              (xs < boxes[:, 2].view(n, 1, 1)))
    fill = fill.to(images).view(1, c, 1, 1).expand_as(images)
    return torch.where(inside[:, None], fill, images)


LossFn = Callable[[Tensor, Tensor], Tensor]


def fgsm(loss_fn: LossFn,
         images: Tensor,
         labels: Tensor,
         eps: float,
         low: float = 0.0,
         high: float = 255.0) -> Tensor:
    r"""Fast gradient sign method (untargeted, L-inf).

    :math:`x' = \mathrm{clip}_{[low, high]}(x + \epsilon\,
    \mathrm{sign}(\nabla_x L(x, y)))`, as torchattacks' ``FGSM``.

    Args:
        loss_fn (Callable): ``loss_fn(images, labels)`` -> scalar loss
            (mean cross-entropy of the model on ``images``).
        images (Tensor): (N, C, H, W) float images in [low, high].
        labels (Tensor): (N,) ground-truth classes.
        eps (float): Budget, >= 0, in the units of ``images``.
        low (float): Smallest valid value. Defaults to 0.
        high (float): Largest valid value. Defaults to 255.

    Returns:
        Tensor: The adversarial images (detached).
    """
    eps = check_number('eps', eps, 0.0)
    x = images.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss_fn(x, labels), x)
    return (x.detach() + eps * grad.sign()).clamp(low, high)


def pgd(loss_fn: LossFn,
        images: Tensor,
        labels: Tensor,
        eps: float,
        steps: int = 10,
        alpha: Optional[float] = None,
        random_start: bool = True,
        generator: Optional[torch.Generator] = None,
        low: float = 0.0,
        high: float = 255.0) -> Tensor:
    r"""Projected gradient descent (untargeted, L-inf), as torchattacks'
    ``PGD``: an optional uniform start in the ``eps`` ball, then ``steps``
    signed-gradient steps of ``alpha``, each projected back onto the ball
    and clipped to [low, high].

    Args:
        loss_fn (Callable): ``loss_fn(images, labels)`` -> scalar loss.
        images (Tensor): (N, C, H, W) float images in [low, high].
        labels (Tensor): (N,) ground-truth classes.
        eps (float): Budget, >= 0, in the units of ``images``.
        steps (int): Gradient steps, >= 1. Defaults to 10.
        alpha (float, optional): Step size. Defaults to None: ``eps / 4``
            (torchattacks' 2/255 for 8/255).
        random_start (bool): Start at a uniform point of the ball.
            Defaults to True.
        generator (torch.Generator, optional): Generator of the start.
            Defaults to None (torch's global one).
        low (float): Smallest valid value. Defaults to 0.
        high (float): Largest valid value. Defaults to 255.

    Returns:
        Tensor: The adversarial images (detached).
    """
    eps = check_number('eps', eps, 0.0)
    steps = check_int('steps', steps, 1)
    alpha = eps / 4 if alpha is None else check_number('alpha', alpha, 0.0)
    images = images.detach()
    adv = images.clone()
    if random_start:
        noise = torch.empty_like(adv).uniform_(-eps, eps, generator=generator)
        adv = (adv + noise).clamp(low, high)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(adv, labels), adv)
        adv = adv.detach() + alpha * grad.sign()
        delta = (adv - images).clamp(-eps, eps)
        adv = (images + delta).clamp(low, high)
    return adv.detach()


class PixelClassifier:
    """An mmpretrain classifier seen as a function of raw pixels.

    The pixels are what the test dataloader yields (0..255, in its channel
    order, float); they go through the model's own data preprocessor
    (channel conversion, mean / std, padding), differentiably, then the
    model. Predictions use ``mode='predict'`` (what ``tools/test.py`` and
    ``Accuracy`` use); the attacks differentiate the cross-entropy of
    ``mode='tensor'`` (the head's logits).

    Args:
        model (nn.Module): A built mmpretrain classifier (any registered
            one) with its ``data_preprocessor``; it is put in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.preprocessor = model.data_preprocessor
        pre = self.preprocessor
        #: Whether the dataloader's images are BGR (converted by the model).
        self.bgr_inputs = bool(
            getattr(pre, 'to_rgb', getattr(pre, '_channel_conversion',
                                           False)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fill(self, channels: int) -> Tensor:
        """(C,) pixel values that normalise to 0 (the mean), in the
        dataloader's channel order; zeros without normalisation."""
        pre = self.preprocessor
        if not getattr(pre, '_enable_normalize', False):
            return torch.zeros(channels)
        mean = pre.mean.detach().reshape(-1).float().cpu()
        if mean.numel() == 1:
            mean = mean.expand(channels)
        if self.bgr_inputs and channels == 3:
            mean = mean.flip(0)
        return mean.clone()

    def _inputs(self, pixels: Tensor) -> Tensor:
        data = self.preprocessor(dict(inputs=pixels.float()), False)
        return data['inputs']

    def logits(self, pixels: Tensor) -> Tensor:
        """(N, K) logits (``mode='tensor'``), differentiable in pixels."""
        out = self.model(self._inputs(pixels), mode='tensor')
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise TypeError(
                f'{type(self.model).__name__}(mode="tensor") must return '
                'the (N, num_classes) logits for the attacks, got '
                f'{type(out).__name__}')
        return out

    def loss(self, pixels: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the logits (the attacks' objective)."""
        return F.cross_entropy(self.logits(pixels), labels.to(self.device))

    @torch.no_grad()
    def scores(self, pixels: Tensor) -> Tensor:
        """(N, K) ``pred_score`` of ``mode='predict'`` (float32, CPU)."""
        samples = self.model(self._inputs(pixels), None, mode='predict')
        return torch.stack([s.pred_score.float() for s in samples]).cpu()


def dataloader_batches(dataloader: Iterable) -> Iterator[Tuple[Tensor,
                                                               Tensor]]:
    """Yield ``(pixels, labels)`` of an mmpretrain test dataloader.

    Args:
        dataloader (Iterable): Yields ``dict(inputs=..., data_samples=...)``
            as mmpretrain's pipelines pack them.

    Yields:
        tuple[Tensor, Tensor]: (N, C, H, W) uint8 images and (N,) int64
        labels.
    """
    for data in dataloader:
        inputs = data['inputs']
        if isinstance(inputs, Tensor):
            pixels = inputs
        else:
            shapes = {tuple(x.shape) for x in inputs}
            if len(shapes) != 1:
                raise ValueError(
                    'the robustness evaluation needs test images of one '
                    f'size (a Resize / CenterCrop in the test pipeline), '
                    f'got sizes {sorted(shapes)}')
            pixels = torch.stack(list(inputs))
        labels = []
        for sample in data['data_samples']:
            label = sample.gt_label.reshape(-1)
            if label.numel() != 1:
                raise ValueError('the robustness evaluation needs one label '
                                 f'per image, got {label.tolist()}')
            labels.append(label)
        if pixels.dtype != torch.uint8:
            pixels = pixels.round().clamp(0, 255).to(torch.uint8)
        yield pixels, torch.cat(labels).long()
