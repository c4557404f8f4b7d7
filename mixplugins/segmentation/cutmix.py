r"""mmpretrain-style CutMix for segmentation (image and label maps together).

CutMix was proposed in `CutMix: Regularization Strategy to Train Strong
Classifiers with Localizable Features <https://arxiv.org/abs/1905.04899>`_
(Yun et al., ICCV 2019). This is mmpretrain's batch ``CutMix`` (one
:math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per batch, a
``randperm`` partner, its ``rand_bbox`` box) with the label maps pasted
together with the pixels, for
:class:`~mixplugins.segmentation.MixSegDataPreProcessor`.
"""
from typing import List, Optional, Tuple

import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from ..core.boxes import CutMixParams, box_area, paste_images
from ..core.checks import check_images, check_number
from ..core.sampling import rand_bbox, sample_beta
from ..core.seg import paste_seg
from ..engine.finite import check_finite_batch
from .data_preprocessor import stack_seg_fields, write_seg_fields

__all__ = ['SegCutMix']

# Registered as 'SegCutMix' and, since mmseg 1.2.2 has no CutMix of its own
# in MODELS, also as 'CutMix', the name users try (mmsegmentation#3244).
_NAMES = ['SegCutMix'] + (['CutMix'] if MODELS.get('CutMix') is None else [])


@MODELS.register_module(name=_NAMES)
class SegCutMix(nn.Module):
    r"""CutMix for semantic segmentation.

    One :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per batch, a
    partner ``index = randperm(N)`` and one box of side ratio
    :math:`\sqrt{1-\lambda}` (mmpretrain's ``CutMix.rand_bbox``, clipped to
    the padded batch) for the whole batch. Image ``i`` gets the box region
    of image ``index[i]`` at the same place, and its label maps
    (``gt_sem_seg``, and ``gt_edge_map`` / ``gt_depth_map`` when present)
    get the same region of the partner's maps, so each pixel keeps its own
    label. There are no soft labels to mix (``correct_lam`` does not
    apply). The box may cover padding: pasted padding keeps its
    ``seg_pad_val`` label, so the loss ignores it. Each call draws
    (:meth:`make_params`) and then pastes, and keeps what it drew as
    ``last_params`` (:class:`~mixplugins.core.boxes.CutMixParams`).
    Registered in ``mmseg.registry.MODELS`` as ``'SegCutMix'`` and
    ``'CutMix'``::

        data_preprocessor=dict(type='MixSegDataPreProcessor', ...,
                               batch_augments=[dict(type='CutMix',
                                                    alpha=1.0)])

    Args:
        alpha (float): Parameter of the Beta distribution of :math:`\lambda`,
            > 0. Defaults to 1.0.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_number('alpha', alpha, 0.0, low_open=True)
        self.last_params: Optional[CutMixParams] = None

    def make_params(self, batch_size: int, height: int,
                    width: int) -> CutMixParams:
        r"""Draw :math:`\lambda`, the box (mmpretrain's ``rand_bbox`` rule,
        :func:`~mixplugins.core.sampling.rand_bbox` of area
        :math:`1 - \lambda`) and the partners; ``lam`` is corrected to the
        clipped box."""
        lam = sample_beta(self.alpha)
        box = rand_bbox(height, width, 1.0 - lam.double())
        kept = 1.0 - box_area(box.double()) / (height * width)
        return CutMixParams(
            boxes=box.expand(batch_size, 4),
            lam=kept.float().expand(batch_size),
            index=torch.randperm(batch_size))

    def forward(
        self, inputs: Tensor, data_samples: List[SegDataSample]
    ) -> Tuple[Tensor, List[SegDataSample]]:
        """Cut and paste between the images of the batch.

        Args:
            inputs (Tensor): Normalised, padded images (N, C, H, W).
            data_samples (list[SegDataSample]): Samples with padded maps.

        Returns:
            tuple[Tensor, list[SegDataSample]]: Mixed images and samples.
        """
        check_images('inputs', inputs)
        check_finite_batch('CutMix', inputs)
        n, _, h, w = inputs.shape
        if len(data_samples) != n:
            raise ValueError(f'got {len(data_samples)} data samples for {n} '
                             'images')
        maps = stack_seg_fields(data_samples, (h, w))
        params = self.last_params = self.make_params(n, h, w)
        index = params.index.to(inputs.device)
        mixed = paste_images(inputs, inputs[index], params.boxes,
                             params.boxes)
        write_seg_fields(data_samples, {
            k: paste_seg(v, v[index.to(v.device)], params.boxes,
                         params.boxes)
            for k, v in maps.items()
        })
        return mixed, data_samples

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'
