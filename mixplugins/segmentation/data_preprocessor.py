"""A ``SegDataPreProcessor`` that applies batch augments.

mmseg 1.2.2's ``SegDataPreProcessor`` stores ``batch_augments`` as given
(``# TODO: support batch augmentations``) and then calls the raw list, so
any ``batch_augments=[dict(...)]`` crashes with ``'list' object is not
callable`` (open-mmlab/mmsegmentation#3244). :class:`MixSegDataPreProcessor`
builds the list with mmseg's ``MODELS`` and chains it in training, after
normalisation and padding (``stack_batch``), as mmdet's
``DetDataPreprocessor`` does.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

__all__ = [
    'MixSegDataPreProcessor', 'SegBatchAugments', 'SEG_FIELDS',
    'stack_seg_fields', 'write_seg_fields'
]

#: Per-pixel fields of ``SegDataSample`` that the batch augments move with
#: the pixels (those present in the samples).
SEG_FIELDS = ('gt_sem_seg', 'gt_edge_map', 'gt_depth_map')


class SegBatchAugments(nn.ModuleList):
    """Batch augments applied one after the other.

    A ``ModuleList`` (so the augments and their state are submodules of the
    model and go into checkpoints) that is also callable the way
    ``SegDataPreProcessor.forward`` calls ``self.batch_augments``.

    Args:
        augments (Sequence[dict | nn.Module]): Augment configs, built with
            ``mmseg.registry.MODELS``, or built modules.
    """

    def __init__(self, augments: Sequence[Union[dict, nn.Module]]) -> None:
        built = []
        for aug in augments:
            if isinstance(aug, dict):
                aug = MODELS.build(aug)
            if not callable(aug):
                raise TypeError('each entry of `batch_augments` must be a '
                                f'config dict or a module, got {aug!r}')
            built.append(aug)
        super().__init__(built)

    def forward(
        self, inputs: Tensor, data_samples: List[SegDataSample]
    ) -> Tuple[Tensor, List[SegDataSample]]:
        """Run every augment on ``(inputs, data_samples)`` in order."""
        for aug in self:
            inputs, data_samples = aug(inputs, data_samples)
        return inputs, data_samples


@MODELS.register_module()
class MixSegDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` whose ``batch_augments`` work.

    Takes every argument of mmseg's ``SegDataPreProcessor``; the only
    difference is that ``batch_augments`` (a list of configs of modules
    registered in ``mmseg.registry.MODELS``, e.g. ``RecursiveMix`` and
    ``CutMix`` of this package) is built into a :class:`SegBatchAugments`
    and applied in training to the normalised, padded batch, in order. Each
    augment is called as ``aug(inputs, data_samples) -> (inputs,
    data_samples)``.

    Args:
        mean (Sequence[float], optional): Pixel mean. Defaults to None.
        std (Sequence[float], optional): Pixel std. Defaults to None.
        size (tuple, optional): Fixed padded size. Defaults to None.
        size_divisor (int, optional): Pad to a multiple of it. Defaults to
            None.
        pad_val (float): Image padding value. Defaults to 0.
        seg_pad_val (float): Label padding value. Defaults to 255.
        bgr_to_rgb (bool): Convert BGR to RGB. Defaults to False.
        rgb_to_bgr (bool): Convert RGB to BGR. Defaults to False.
        batch_augments (list[dict], optional): Batch augments applied in
            training. Defaults to None.
        test_cfg (dict, optional): Test-time padding. Defaults to None.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 size: Optional[tuple] = None,
                 size_divisor: Optional[int] = None,
                 pad_val: float = 0,
                 seg_pad_val: float = 255,
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 batch_augments: Optional[List[dict]] = None,
                 test_cfg: Optional[dict] = None) -> None:
        super().__init__(mean=mean,
                         std=std,
                         size=size,
                         size_divisor=size_divisor,
                         pad_val=pad_val,
                         seg_pad_val=seg_pad_val,
                         bgr_to_rgb=bgr_to_rgb,
                         rgb_to_bgr=rgb_to_bgr,
                         batch_augments=None,
                         test_cfg=test_cfg)
        if batch_augments is not None:
            is_list = isinstance(batch_augments, Sequence) and not isinstance(
                batch_augments, (str, dict, nn.Module))
            if not is_list:
                raise TypeError('`batch_augments` must be a list of augment '
                                f'configs, got {batch_augments!r}')
            self.batch_augments = SegBatchAugments(batch_augments)


def stack_seg_fields(data_samples: Sequence[SegDataSample],
                     size: Tuple[int, int]) -> Dict[str, Tensor]:
    """Stack the per-pixel fields present in every sample.

    Args:
        data_samples (Sequence[SegDataSample]): Padded samples.
        size (tuple[int, int]): ``(H, W)`` of the batch; every map must
            have it.

    Returns:
        dict[str, Tensor]: ``{field: (N, 1, H, W) tensor}`` for each field
        of :data:`SEG_FIELDS` that the first sample has.

    Raises:
        ValueError: a field is in some samples only, or a map has another
            size.
    """
    out = {}
    for name in SEG_FIELDS:
        has = [name in s for s in data_samples]
        if not any(has):
            continue
        if not all(has):
            raise ValueError(f'`{name}` is set in some data samples only')
        maps = [getattr(s, name).data for s in data_samples]
        for m in maps:
            if m.dim() != 3 or tuple(m.shape[-2:]) != tuple(size):
                raise ValueError(f'`{name}` must be (C, {size[0]}, {size[1]})'
                                 f' like the padded images, got '
                                 f'{tuple(m.shape)}')
        out[name] = torch.stack(maps)
    return out


def write_seg_fields(data_samples: Sequence[SegDataSample],
                     fields: Dict[str, Tensor]) -> None:
    """Give each sample new ``PixelData`` holding its row of ``fields``."""
    for i, sample in enumerate(data_samples):
        for name, maps in fields.items():
            old = getattr(sample, name)
            setattr(sample, name, PixelData(data=maps[i],
                                            metainfo=old.metainfo))
