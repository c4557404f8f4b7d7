r"""RecursiveMix inside mmseg training, as a batch augment of
:class:`~mixplugins.segmentation.MixSegDataPreProcessor`.

The segmentation counterpart of :mod:`mixplugins.detection.recursivemix`
(paper, official code and the status of in-training pasting are described
there; the paper's ADE20K results fine-tune an RM-pretrained backbone
without mixing). The shared step is
:class:`~mixplugins.engine.paste_history.PasteHistoryAugment`; this module
only reads, pastes and writes the label maps.
"""
from typing import Any, Dict, List, Tuple

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..core.seg import paste_seg
from ..engine.paste_history import PasteHistoryAugment
from .data_preprocessor import stack_seg_fields, write_seg_fields

__all__ = ['RecursiveMix']

Maps = Dict[str, Tensor]


@MODELS.register_module()
class RecursiveMix(PasteHistoryAugment):
    r"""RecursiveMix for segmentation: paste the previous mixed batch.

    Each image gets one box (RecursiveMix's ``sample_box``, nominal area
    fraction :math:`U(0, \alpha)`, drawn inside its valid area
    ``img_shape``); the valid area of the previous step's *mixed* image with
    the same index (cycled when that batch was smaller) is resized into it,
    and its label maps (``gt_sem_seg``, and ``gt_edge_map`` /
    ``gt_depth_map`` when present) are resized with the nearest rule that
    the image uses, so every mixed pixel keeps the label of the pixel it was
    copied from: the ignore index is copied, never blended, and the padding
    (``seg_pad_val``) outside the valid area is untouched. Shapes and
    metainfo are unchanged; the images come back as a new tensor and the
    samples get new ``PixelData`` fields.

    The history is per process and owned by this module's ``history``
    (:class:`~mixplugins.engine.history.RecursiveMixHistory`, saved in
    checkpoints); it is cleared when the epoch in mmengine's ``MessageHub``
    changes unless ``carry_history``. What was drawn is kept as
    ``last_params`` (:class:`~mixplugins.core.recursive.RecursiveMixParams`);
    the step itself is
    :class:`~mixplugins.engine.paste_history.PasteHistoryAugment`. Under mmseg's usual ``IterBasedTrainLoop`` the epoch
    never changes, so the history is carried over the whole run.

    Needs ``model.data_preprocessor.type='MixSegDataPreProcessor'`` (mmseg's
    own preprocessor cannot run batch augments)::

        data_preprocessor=dict(type='MixSegDataPreProcessor', ...,
                               batch_augments=[dict(type='RecursiveMix')])

    Args:
        alpha (float): As the detection ``RecursiveMix``. Defaults to 0.5.
        interpolation (str): As the detection ``RecursiveMix``, with label
            maps in place of masks. Defaults to ``'nearest'``.
        carry_history (bool): Keep the history across epochs. Defaults to
            False.
    """

    def __init__(self,
                 alpha: float = 0.5,
                 interpolation: str = 'nearest',
                 carry_history: bool = False) -> None:
        super().__init__(alpha, interpolation, carry_history)

    # ------------------------------------------------------ task hooks
    def read_targets(self, data_samples: List[SegDataSample],
                     size: Tuple[int, int]) -> Maps:
        """The label maps of the batch, stacked: name -> (N, 1, H, W)."""
        return stack_seg_fields(data_samples, size)

    def paste_targets(self, targets: Maps, rows: Tensor, boxes: Tensor,
                      src_boxes: Tensor) -> Maps:
        hist = self.history['maps']
        missing = sorted(set(targets) - set(hist))
        if missing:
            raise ValueError(f'the batch has {missing} but the history '
                             'batch had not')
        index = rows.to(next(iter(hist.values())).device) if hist else rows
        return {
            k: paste_seg(v, hist[k][index], boxes, src_boxes,
                         self.label_mode)
            for k, v in targets.items()
        }

    def write_targets(self, data_samples: List[SegDataSample],
                      targets: Maps) -> None:
        write_seg_fields(data_samples, targets)

    def history_fields(self, targets: Maps) -> Dict[str, Any]:
        return dict(maps=targets)
