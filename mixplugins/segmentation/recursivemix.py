r"""RecursiveMix inside mmseg training, as a batch augment of
:class:`~mixplugins.segmentation.MixSegDataPreProcessor`.

RecursiveMix was proposed in `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022); official
code: https://github.com/implus/RecursiveMix-pytorch. The paper's ADE20K
results fine-tune an RM-pretrained backbone without mixing; pasting inside
segmentation training follows the design sketch of ``recursivemix_spec.md``
§3.1 and is not from the authors (no consistency loss here).
"""
from typing import Any, Dict, List, Tuple

import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..core.boxes import paste_images
from ..core.recursive import sample_box
from ..paste_history import PasteHistoryAugment
from ..core.seg import paste_seg
from .data_preprocessor import stack_seg_fields, write_seg_fields

__all__ = ['RecursiveMix']


def _valid_shapes(data_samples: List[SegDataSample], h: int,
                  w: int) -> List[Tuple[int, int]]:
    """``img_shape`` (the unpadded size ``stack_batch`` records) per image,
    clipped to the batch size; the whole image when it is missing."""
    out = []
    for s in data_samples:
        ih, iw = s.metainfo.get('img_shape', (h, w))[:2]
        out.append((max(1, min(int(ih), h)), max(1, min(int(iw), w))))
    return out


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

    The history is per process and owned by this module (saved in
    checkpoints through ``get_extra_state``/``set_extra_state``); it is
    cleared when the epoch in mmengine's ``MessageHub`` changes unless
    ``carry_history``. Under mmseg's usual ``IterBasedTrainLoop`` the epoch
    never changes, so the history is carried over the whole run.

    Needs ``model.data_preprocessor.type='MixSegDataPreProcessor'`` (mmseg's
    own preprocessor cannot run batch augments)::

        data_preprocessor=dict(type='MixSegDataPreProcessor', ...,
                               batch_augments=[dict(type='RecursiveMix')])

    Args:
        alpha (float): Maximum nominal paste area fraction, in (0, 1].
            Defaults to 0.5 (official).
        interpolation (str): Resize of the history image, one of
            ``'nearest'``, ``'nearest-exact'``, ``'bilinear'``
            (``align_corners=True``); label maps always use the nearest rule
            (``'nearest-exact'`` when that is chosen). Defaults to
            ``'nearest'`` (official).
        carry_history (bool): Keep the history across epochs. Defaults to
            False.
    """

    HISTORY_FIELDS = dict(hist_maps=dict, hist_shapes=list)

    def __init__(self,
                 alpha: float = 0.5,
                 interpolation: str = 'nearest',
                 carry_history: bool = False) -> None:
        super().__init__(alpha, interpolation, carry_history)

    def _fields_to_state(self) -> Dict[str, Any]:
        return dict(maps=self.hist_maps,
                    shapes=[list(s) for s in self.hist_shapes])

    def _fields_from_state(self, state: Dict[str, Any]) -> None:
        self.hist_maps = dict(state.get('maps') or {})
        self.hist_shapes = [tuple(s) for s in state.get('shapes') or []]

    def forward(
        self, inputs: Tensor, data_samples: List[SegDataSample]
    ) -> Tuple[Tensor, List[SegDataSample]]:
        """Paste the history into the batch.

        Args:
            inputs (Tensor): Normalised, padded images (N, C, H, W).
            data_samples (list[SegDataSample]): Samples with padded
                ``gt_sem_seg`` and metainfo ``img_shape``.

        Returns:
            tuple[Tensor, list[SegDataSample]]: Mixed images and samples.
        """
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError('`inputs` must be an (N, C, H, W) tensor, got '
                             f'{getattr(inputs, "shape", inputs)!r}')
        n, c, h, w = inputs.shape
        if len(data_samples) != n:
            raise ValueError(f'got {len(data_samples)} data samples for {n} '
                             'images')
        self._sync_epoch()
        maps = stack_seg_fields(data_samples, (h, w))
        shapes = _valid_shapes(data_samples, h, w)
        mixed = inputs
        if self.hist_inputs is not None and self.hist_shapes:
            if self.hist_inputs.shape[1] != c:
                raise ValueError(f'history images have '
                                 f'{self.hist_inputs.shape[1]} channels, the'
                                 f' batch has {c}')
            missing = sorted(set(maps) - set(self.hist_maps))
            if missing:
                raise ValueError(f'the batch has {missing} but the history '
                                 'batch had not')
            device = inputs.device
            if self.hist_inputs.device != device:
                self.hist_inputs = self.hist_inputs.to(device)
                self.hist_maps = {
                    k: v.to(device)
                    for k, v in self.hist_maps.items()
                }
            hist_idx = [i % len(self.hist_shapes) for i in range(n)]
            index = (slice(0, n) if n <= len(self.hist_shapes) else
                     torch.as_tensor(hist_idx, device=device))
            boxes = [sample_box(sh, sw, self.alpha) for sh, sw in shapes]
            src_boxes = [[
                0, 0, self.hist_shapes[j][1], self.hist_shapes[j][0]
            ] for j in hist_idx]
            mixed = paste_images(inputs, self.hist_inputs[index], boxes,
                                 src_boxes, self.interpolation)
            seg_mode = ('nearest-exact' if self.interpolation
                        == 'nearest-exact' else 'nearest')
            maps = {
                k:
                paste_seg(v, self.hist_maps[k][index], boxes, src_boxes,
                          seg_mode)
                for k, v in maps.items()
            }
            write_seg_fields(data_samples, maps)
        self.hist_inputs = mixed.detach().clone()
        self.hist_maps = {k: v.detach().clone() for k, v in maps.items()}
        self.hist_shapes = shapes
        return mixed, data_samples
