"""The ``aug_plus`` colour augmentation of RecursiveMix's ImageNet recipe.

RecursiveMix (Yang et al., "RecursiveMix: Mixed Learning with History",
NeurIPS 2022, https://arxiv.org/abs/2203.06844, code
https://github.com/implus/RecursiveMix-pytorch) trains its ImageNet
ResNet-50 runs with ``--aug_plus``: after ``ToTensor`` and before
``Normalize`` it applies the fb.resnet.torch colour jitter and the AlexNet
PCA lighting noise (https://github.com/facebookarchive/fb.resnet.torch,
``datasets/transforms.lua``). Both act on float ``[0, 1]`` RGB tensors and
never clip.

mmpretrain 1.2.0's ``ColorJitter`` and ``Lighting`` do not reproduce them:

* ``ColorJitter`` uses PIL/mmcv enhancers on uint8 images: every step rounds
  and clips to ``[0, 255]``, PIL's grayscale weights are 0.299/0.587/0.114
  (fb.resnet: 0.2989) and the contrast mean is rounded to an integer.
* ``Lighting`` adds the noise in float and then casts back to the input
  dtype, so on uint8 images values below 0 or above 255 wrap around instead
  of staying out of range; its eigen-values must also be given in 0-255
  units, and its ``to_rgb=True`` leaves the image converted to RGB.

The two transforms below implement the reference formulas on the
``(H, W, C)`` images of an mm pipeline and output float32 images that the
data preprocessor then normalizes. mm pipelines keep pixels in 0-255 units
(uint8 from ``LoadImageFromFile``, normalization with ``mean``/``std`` times
255 in the data preprocessor) where the reference works in 0-1 units:

* the jitter is linear and homogeneous (it blends the image with black, with
  its own mean gray level and with its own grayscale), so it gives the same
  result in either unit: ``f(255 x) = 255 f(x)``;
* the lighting noise is an additive offset computed from eigen-values in
  0-1 units (the published ImageNet values ``(0.2175, 0.0188, 0.0045)``);
  :class:`PCALighting` multiplies it by ``value_scale`` (255 by default) so
  that it is added in the image's units.

Hence ``Normalize(mean, std)(aug_plus(x / 255))`` of the reference equals the
data preprocessor's ``(aug_plus_mm(x) - 255 mean) / (255 std)`` up to float
rounding. Neither transform clips, like the reference.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmpretrain.registry import TRANSFORMS

from ..core.checks import check_choice, check_number

__all__ = [
    'LerpColorJitter', 'PCALighting', 'IMAGENET_PCA_EIGVAL',
    'IMAGENET_PCA_EIGVEC'
]

# AlexNet / fb.resnet.torch ImageNet RGB PCA, in 0-1 pixel units. Columns of
# the eigen-vector matrix are the eigen-vectors, rows are R, G, B.
IMAGENET_PCA_EIGVAL: Tuple[float, float, float] = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC: Tuple[Tuple[float, float, float], ...] = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# fb.resnet.torch grayscale weights for R, G, B.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_CHANNEL_ORDERS = ('bgr', 'rgb')


def _check_channel_order(channel_order: str) -> str:
    return check_choice('channel_order', channel_order, _CHANNEL_ORDERS)


def _to_float_hwc3(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as a new float32 ``(H, W, 3)`` array."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError('expected an (H, W, 3) colour image, got shape '
                         f'{img.shape}')
    return img.astype(np.float32)  # copy: the input is never modified


class _ColourTransform(BaseTransform):
    """A random colour transform of an ``(H, W, 3)`` image, output float32.

    :meth:`transform` converts the image (a copy), draws the parameters with
    the subclass's ``_rand_params`` (when :attr:`enabled`) and applies them
    with its ``_apply``.
    """

    @property
    def enabled(self) -> bool:
        """Whether the transform draws and applies anything."""
        return True

    def _apply(self, img: np.ndarray, params) -> np.ndarray:
        raise NotImplementedError

    def transform(self, results: Dict) -> Dict:
        """Transform ``results['img']``.

        Args:
            results (dict): Result dict with ``img``.

        Returns:
            dict: ``results`` with a float32 ``img``.
        """
        img = _to_float_hwc3(results['img'])
        if self.enabled:
            img = self._apply(img, self._rand_params())
        results['img'] = img
        return results


@TRANSFORMS.register_module()
class LerpColorJitter(_ColourTransform):
    r"""fb.resnet.torch colour jitter: unclipped brightness, contrast and
    saturation blends in random order.

    The ``aug_plus`` jitter of RecursiveMix
    (`RecursiveMix: Mixed Learning with History
    <https://arxiv.org/abs/2203.06844>`_,
    https://github.com/implus/RecursiveMix-pytorch). Each enabled operation
    (a strength of 0 disables it) draws :math:`a \sim U(-v, v)` and
    linearly interpolates the image :math:`x` toward a target :math:`t`,
    :math:`x \leftarrow x + a (t - x)`, with :math:`t` equal to

    * brightness: 0 (black);
    * contrast: the mean of the grayscale image (one scalar);
    * saturation: the grayscale image
      :math:`g = 0.2989 R + 0.587 G + 0.114 B`.

    The enabled operations run in a random order, each computing its
    target from the output of the previous one, as in the reference (the
    three blends commute, so the order does not change the result beyond
    float rounding). The result is float32 and is not clipped. See the module docstring for why the pixel unit (0-1 or
    0-255) does not matter and how this differs from mmpretrain's
    ``ColorJitter``.

    **Required Keys:** ``img`` (``(H, W, 3)``, any numeric dtype).

    **Modified Keys:** ``img`` (float32).

    Args:
        brightness (float): Strength :math:`v` of the brightness blend,
            >= 0. Defaults to 0.4.
        contrast (float): Strength of the contrast blend, >= 0. Defaults to
            0.4.
        saturation (float): Strength of the saturation blend, >= 0.
            Defaults to 0.4.
        channel_order (str): Channel order of ``img``: ``'bgr'`` (what
            ``LoadImageFromFile`` gives) or ``'rgb'`` (mmpretrain's CIFAR
            datasets). Only the grayscale weights depend on it. Defaults to
            ``'bgr'``.
    """

    OPS = ('brightness', 'contrast', 'saturation')

    def __init__(self,
                 brightness: float = 0.4,
                 contrast: float = 0.4,
                 saturation: float = 0.4,
                 channel_order: str = 'bgr') -> None:
        self.brightness = check_number('brightness', brightness, 0.0)
        self.contrast = check_number('contrast', contrast, 0.0)
        self.saturation = check_number('saturation', saturation, 0.0)
        self.channel_order = _check_channel_order(channel_order)
        weights = np.array(_GRAY_WEIGHTS, dtype=np.float32)
        self._gray_weights = (
            weights[::-1].copy() if channel_order == 'bgr' else weights)

    @cache_randomness
    def _rand_params(self) -> List[Tuple[str, float]]:
        """Draw the order of the enabled operations and their factors.

        Returns:
            list[tuple[str, float]]: ``(operation, a)`` in application
            order.
        """
        enabled = [op for op in self.OPS if getattr(self, op) > 0]
        order = np.random.permutation(len(enabled))
        return [(enabled[i],
                 float(
                     np.random.uniform(-getattr(self, enabled[i]),
                                       getattr(self, enabled[i]))))
                for i in order]

    def _grayscale(self, img: np.ndarray) -> np.ndarray:
        return img @ self._gray_weights

    def _apply(self, img: np.ndarray,
               params: Sequence[Tuple[str, float]]) -> np.ndarray:
        """Apply the blends ``params`` (from :meth:`_rand_params`) to a
        float32 image."""
        for op, a in params:
            if op == 'brightness':
                target = np.zeros((), dtype=np.float32)
            elif op == 'contrast':
                target = self._grayscale(img).mean(dtype=np.float64)
            else:
                target = self._grayscale(img)[..., None]
            img = (img + np.float32(a) * (target - img)).astype(np.float32)
        return img

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(brightness={self.brightness}, '
                f'contrast={self.contrast}, saturation={self.saturation}, '
                f'channel_order={self.channel_order!r})')


@TRANSFORMS.register_module()
class PCALighting(_ColourTransform):
    r"""AlexNet-style PCA lighting noise, unclipped, in the image's units.

    The ``aug_plus`` lighting of RecursiveMix
    (`RecursiveMix: Mixed Learning with History
    <https://arxiv.org/abs/2203.06844>`_), from AlexNet (Krizhevsky et al.,
    2012) via fb.resnet.torch: draw :math:`\alpha \sim N(0,
    \sigma^2 I_3)` and add to every pixel the RGB offset

    .. math::
        \delta = s \cdot V (\alpha \odot \lambda),

    where :math:`V` holds the eigen-vectors as columns (rows R, G, B),
    :math:`\lambda` the eigen-values in **0-1 pixel units** (the published
    values) and :math:`s` = ``value_scale`` the pixel value that stands for
    1.0 in the image: 255 for the uint8/0-255 images of an mm pipeline
    (normalized later by the data preprocessor with 255-scaled
    ``mean``/``std``), 1 for images already in ``[0, 1]``. With
    :math:`s = 255` the result equals 255 times the reference applied to
    ``img / 255``. The output is float32 and is not clipped (mmpretrain's
    ``Lighting`` casts back to uint8, which wraps values outside
    ``[0, 255]``).

    **Required Keys:** ``img`` (``(H, W, 3)``, any numeric dtype).

    **Modified Keys:** ``img`` (float32).

    Args:
        eigval (Sequence[float]): The 3 eigen-values of the RGB pixel
            covariance, in 0-1 units. Defaults to the ImageNet values
            ``(0.2175, 0.0188, 0.0045)``.
        eigvec (Sequence[Sequence[float]]): 3x3 matrix whose columns are the
            matching eigen-vectors, rows ordered R, G, B. Defaults to the
            ImageNet matrix ``IMAGENET_PCA_EIGVEC``.
        alphastd (float): Standard deviation :math:`\sigma` of the
            coefficients, >= 0. Defaults to 0.1.
        value_scale (float): Pixel value of 1.0 in the units of ``eigval``,
            > 0. Defaults to 255.0.
        channel_order (str): Channel order of ``img``, ``'bgr'`` or
            ``'rgb'``; the offset is computed in RGB and permuted to match.
            Defaults to ``'bgr'``.
    """

    def __init__(self,
                 eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC,
                 alphastd: float = 0.1,
                 value_scale: float = 255.0,
                 channel_order: str = 'bgr') -> None:
        eigval_arr = np.asarray(eigval, dtype=np.float64)
        eigvec_arr = np.asarray(eigvec, dtype=np.float64)
        if eigval_arr.shape != (3, ):
            raise ValueError(f'`eigval` must hold 3 numbers, got {eigval!r}')
        if eigvec_arr.shape != (3, 3):
            raise ValueError(f'`eigvec` must be a 3x3 matrix, got {eigvec!r}')
        self.alphastd = check_number('alphastd', alphastd, 0.0)
        self.value_scale = check_number(
            'value_scale', value_scale, 0.0, low_open=True)
        self.eigval = eigval_arr
        self.eigvec = eigvec_arr
        self.channel_order = _check_channel_order(channel_order)

    @cache_randomness
    def _rand_params(self) -> np.ndarray:
        """Draw the 3 PCA coefficients :math:`\\alpha`."""
        return np.random.normal(0, self.alphastd, size=3)

    def offset(self, alpha: np.ndarray) -> np.ndarray:
        """The per-channel offset for coefficients ``alpha``.

        Args:
            alpha (np.ndarray): The 3 PCA coefficients.

        Returns:
            np.ndarray: float32 offset of shape ``(3,)`` in the channel order
            and units of the image.
        """
        rgb = self.value_scale * (self.eigvec @ (alpha * self.eigval))
        if self.channel_order == 'bgr':
            rgb = rgb[::-1]
        return rgb.astype(np.float32)

    @property
    def enabled(self) -> bool:
        """No noise (and no draw) when ``alphastd`` is 0."""
        return self.alphastd > 0

    def _apply(self, img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Add the offset of the coefficients ``alpha`` to ``img``."""
        img += self.offset(alpha)
        return img

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(eigval={self.eigval.tolist()}, '
                f'eigvec={self.eigvec.tolist()}, alphastd={self.alphastd}, '
                f'value_scale={self.value_scale}, '
                f'channel_order={self.channel_order!r})')
