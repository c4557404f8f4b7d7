r"""RecursiveMix inside mmdet training, as a ``DetDataPreprocessor`` batch
augment.

RecursiveMix was proposed in `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022); official
code: https://github.com/implus/RecursiveMix-pytorch. The paper's COCO
results fine-tune an RM-pretrained backbone without mixing; pasting inside
detection training follows the design sketch of ``recursivemix_spec.md``
§3.1 and is not from the authors (no consistency loss here).
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import BaseBoxes, HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.structures import InstanceData
from torch import Tensor

from ..core.boxes import occlude_boxes, occlude_masks, paste_boxes, paste_masks
from ..core.checks import check_fraction
from ..engine.paste_history import PasteHistoryAugment

__all__ = ['RecursiveMix']

_FIELDS = ('bboxes', 'labels', 'masks')
_GROUPS = ('gt_instances', 'ignored_instances')
#: Pasted boxes narrower or lower than this (pixels) are dropped: the nearest
#: resize may not show them at all.
MIN_PASTED_SIDE = 1.0

Record = Dict[str, Any]


def _unpack(instances: InstanceData, group: str) -> Tuple[Record, Any]:
    """InstanceData -> plain tensors, plus the box type to restore."""
    extra = sorted(set(instances.keys()) - set(_FIELDS))
    if extra:
        raise ValueError(f'RecursiveMix can only paste {_FIELDS} of '
                         f'`{group}`, got the extra fields {extra}')
    bboxes = instances.get('bboxes', None)
    box_type = None
    if bboxes is None:
        bboxes = torch.zeros(0, 4)
    elif isinstance(bboxes, BaseBoxes):
        if not isinstance(bboxes, HorizontalBoxes):
            raise TypeError(f'`{group}.bboxes` must be a (k, 4) tensor or '
                            f'HorizontalBoxes, got {type(bboxes).__name__}')
        box_type, bboxes = type(bboxes), bboxes.tensor
    elif not isinstance(bboxes, Tensor):
        raise TypeError(f'`{group}.bboxes` must be a (k, 4) tensor or '
                        f'HorizontalBoxes, got {type(bboxes).__name__}')
    labels = instances.get('labels', None)
    if labels is None:
        labels = torch.zeros(len(bboxes),
                             dtype=torch.long,
                             device=bboxes.device)
    masks = instances.get('masks', None)
    if isinstance(masks, PolygonMasks):
        raise ValueError(f'RecursiveMix cannot paste PolygonMasks in '
                         f'`{group}.masks`; load bitmap masks '
                         '(LoadAnnotations(with_mask=True, poly2mask=True))')
    if masks is not None:
        if not isinstance(masks, BitmapMasks):
            raise TypeError(f'`{group}.masks` must be BitmapMasks, got '
                            f'{type(masks).__name__}')
        masks = torch.from_numpy(np.ascontiguousarray(masks.masks))
    return dict(bboxes=bboxes, labels=labels, masks=masks), box_type


def _pack(rec: Record, box_type: Any, like: InstanceData) -> InstanceData:
    out = InstanceData(metainfo=like.metainfo)
    bboxes = rec['bboxes']
    out.bboxes = box_type(bboxes) if box_type is not None else bboxes
    out.labels = rec['labels']
    if rec['masks'] is not None:
        m = rec['masks']
        out.masks = BitmapMasks(m.numpy(), m.shape[1], m.shape[2])
    return out


@MODELS.register_module()
class RecursiveMix(PasteHistoryAugment):
    r"""RecursiveMix for detection: paste the previous mixed batch.

    Each image of the batch gets one box (RecursiveMix's ``sample_box``,
    nominal area fraction :math:`U(0, \alpha)`, drawn inside that image's
    valid area ``img_shape``). The valid area of the previous step's *mixed*
    image with the same index (cycled when the previous batch was smaller)
    is resized into it; its instances follow:

    * pasted boxes are scaled by the box size over the history's valid size,
      offset by the box corner and clipped to the box; those with a side
      below 1 px are dropped (the nearest resize may show none of them);
    * current boxes covered by the paste become the bounding box of their
      visible part (shrunk when a whole side strip is hidden, unchanged
      otherwise) and are dropped when fully covered or when their visible
      area fraction is below ``min_visible``
      (:func:`~mixplugins.core.boxes.occlude_boxes`);
    * labels follow their boxes (hard labels, as mmdet's own ``MixUp``);
      ``ignored_instances`` get the same treatment as ``gt_instances``;
    * bitmap instance masks are zeroed under the paste and the history's
      masks are pasted with the image's nearest rule; ``PolygonMasks`` are
      refused (load with ``poly2mask=True``).

    Boxes may be ``(k, 4)`` tensors or ``HorizontalBoxes``
    (``boxtype2tensor=False``); the output has the input's type. Images of
    different valid sizes in one batch and a history of another batch size
    or padded shape are handled. Shapes and metainfo are unchanged. The
    images come back as a new tensor; ``gt_instances`` /
    ``ignored_instances`` of the samples are replaced by new objects.

    The history (the mixed inputs and instances of the previous call) is
    per process and owned by this module's ``history``
    (:class:`~mixplugins.engine.history.RecursiveMixHistory`, saved in
    checkpoints). As the official code, it is cleared when the epoch in
    mmengine's ``MessageHub`` changes (so the first step of each epoch is
    unmixed) unless ``carry_history``. The official code draws one box per
    batch; here each image, whose valid size differs, draws its own. What
    was drawn is kept as ``last_params``
    (:class:`~mixplugins.core.recursive.RecursiveMixParams`); the step
    itself is :class:`~mixplugins.engine.paste_history.PasteHistoryAugment`.

    Use in ``model.data_preprocessor`` (training only; mmdet applies batch
    augments after normalising and padding)::

        data_preprocessor=dict(type='DetDataPreprocessor', ...,
                               batch_augments=[dict(type='RecursiveMix')])

    Args:
        alpha (float): Maximum nominal paste area fraction, in (0, 1].
            Defaults to 0.5 (official).
        min_visible (float): Smallest visible area fraction of a current
            box to keep it, in [0, 1]. Defaults to 0.3.
        interpolation (str): Resize of the history image, one of
            ``'nearest'``, ``'nearest-exact'``, ``'bilinear'``
            (``align_corners=True``). Masks always use the nearest rule
            (``'nearest-exact'`` when that is chosen). Defaults to
            ``'nearest'`` (official).
        carry_history (bool): Keep the history across epochs. Defaults to
            False.
    """

    def __init__(self,
                 alpha: float = 0.5,
                 min_visible: float = 0.3,
                 interpolation: str = 'nearest',
                 carry_history: bool = False) -> None:
        super().__init__(alpha, interpolation, carry_history)
        self.min_visible = check_fraction('min_visible', min_visible)

    # ------------------------------------------------------ task hooks
    def read_targets(self, data_samples: List[DetDataSample],
                     size: Tuple[int, int]) -> List[Record]:
        """Per image: each instance group as plain tensors, and the box
        type to restore."""
        records = []
        for sample in data_samples:
            if 'gt_sem_seg' in sample:
                raise ValueError('RecursiveMix does not paste `gt_sem_seg` '
                                 'of detection samples')
            rec: Record = {}
            for g in _GROUPS:
                if g in sample:
                    rec[g], rec[g + '_type'] = _unpack(getattr(sample, g), g)
                else:
                    rec[g], rec[g + '_type'] = None, None
            records.append(rec)
        return records

    def paste_targets(self, targets: List[Record], rows: Tensor,
                      boxes: Tensor, src_boxes: Tensor) -> List[Record]:
        hist = self.history['samples']
        out = []
        for cur, row, box, src in zip(targets, rows.tolist(),
                                      boxes.tolist(), src_boxes.tolist()):
            rec = dict(cur)
            if box[2] > box[0] and box[3] > box[1]:
                old_shape = (src[3], src[2])
                for g in _GROUPS:
                    if cur[g] is not None:
                        rec[g] = self._mix_group(cur[g], hist[row].get(g),
                                                 old_shape, box, g)
            out.append(rec)
        return out

    def write_targets(self, data_samples: List[DetDataSample],
                      targets: List[Record]) -> None:
        for sample, rec in zip(data_samples, targets):
            for g in _GROUPS:
                if rec[g] is not None:
                    setattr(sample, g,
                            _pack(rec[g], rec[g + '_type'], getattr(sample, g)))

    def history_fields(self, targets: List[Record]) -> Dict[str, Any]:
        return dict(samples=[{g: rec[g] for g in _GROUPS} for rec in targets])

    def _mix_group(self, cur: Record, old: Optional[Record],
                   old_shape: Tuple[int, int], box: Tuple[int, int, int, int],
                   group: str) -> Record:
        bboxes, keep = occlude_boxes(cur['bboxes'], box, self.min_visible)
        parts = dict(bboxes=[bboxes[keep]], labels=[cur['labels'][keep]])
        masks = cur['masks']
        if masks is not None:
            parts['masks'] = [occlude_masks(masks[keep.cpu()], box)]
        if old is not None and len(old['bboxes']):
            device = bboxes.device
            pasted = paste_boxes(old['bboxes'].to(device, bboxes.dtype),
                                 old_shape, box)
            wh = pasted[:, 2:] - pasted[:, :2]
            kp = (wh >= MIN_PASTED_SIDE).all(1)
            parts['bboxes'].append(pasted[kp])
            parts['labels'].append(old['labels'].to(device)[kp])
            if masks is not None:
                if old['masks'] is None:
                    raise ValueError(f'`{group}.masks` is set but the history '
                                     'batch had no masks')
                parts['masks'].append(
                    paste_masks(old['masks'][kp.cpu()],
                                old_shape,
                                box,
                                masks.shape[1:],
                                mode=self.label_mode).to(masks.dtype))
        return {
            k: (torch.cat(parts[k]) if k in parts else None)
            for k in _FIELDS
        }

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, min_visible={self.min_visible}'
