r"""The RecursiveMix step that detection and segmentation share.

RecursiveMix (`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_, Yang et al., NeurIPS 2022; official
code: https://github.com/implus/RecursiveMix-pytorch) pastes the previous
step's mixed batch into the current one. In mmdet and mmseg the augment is
a batch augment of the data preprocessor (an ``nn.Module`` called as
``forward(inputs, data_samples)``) and owns its history
(:class:`~mixplugins.engine.history.RecursiveMixHistory`).
:class:`PasteHistoryAugment` is the whole step; a task adds four small hooks:

1. :meth:`~PasteHistoryAugment.read_targets` -- the samples' targets as
   tensors (instances, label maps);
2. :meth:`~PasteHistoryAugment.paste_targets` -- the targets after the
   history's targets were pasted into the boxes;
3. :meth:`~PasteHistoryAugment.write_targets` -- back into the samples;
4. :meth:`~PasteHistoryAugment.history_fields` -- what the history keeps.

The step: check the batch, sync the history with the epoch, read the
targets and the valid sizes (``img_shape``), draw one paste box per image
inside its valid area (:func:`~mixplugins.core.recursive.sample_box`), resize
the valid area of history image ``b`` into it
(:func:`~mixplugins.core.boxes.paste_images`), paste the targets, record
what was drawn as ``last_params``
(:class:`~mixplugins.core.recursive.RecursiveMixParams`) and store the
mixed batch as the next history.
"""
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core.boxes import PASTE_MODES, paste_images
from ..core.checks import check_choice, check_images, check_paste_alpha
from ..core.recursive import RecursiveMixParams, sample_box
from .finite import check_finite_batch
from .history import RecursiveMixHistory

__all__ = ['PasteHistoryAugment', 'valid_shapes']


def valid_shapes(data_samples: Sequence[Any], height: int,
                 width: int) -> Tensor:
    """``img_shape`` (the unpadded size) of each sample, clipped to the
    padded batch size (H, W); the whole image when it is missing.

    Returns:
        Tensor: (N, 2) int64 ``(h, w)`` on the CPU.
    """
    out = []
    for s in data_samples:
        ih, iw = s.metainfo.get('img_shape', (height, width))[:2]
        out.append((max(1, min(int(ih), height)), max(1, min(int(iw),
                                                             width))))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 2)


class PasteHistoryAugment(nn.Module):
    """RecursiveMix's paste step for mmdet/mmseg (see the module docstring).

    Args:
        alpha (float): Maximum nominal paste area fraction, in (0, 1].
        interpolation (str): Resize of the history image, one of
            :data:`~mixplugins.core.boxes.PASTE_MODES`.
        carry_history (bool): Keep the history across epochs.

    Attributes:
        history (RecursiveMixHistory): The previous step's mixed batch.
        last_params (RecursiveMixParams | None): What the last call drew.

    Raises:
        ValueError: If ``alpha`` or ``interpolation`` is out of range.
        TypeError: If ``carry_history`` is not a bool.
    """

    def __init__(self, alpha: float, interpolation: str,
                 carry_history: bool) -> None:
        super().__init__()
        self.alpha = check_paste_alpha(alpha)
        self.interpolation = check_choice('interpolation', interpolation,
                                          PASTE_MODES)
        self.history = RecursiveMixHistory(carry_history)
        self.last_params = None

    @property
    def carry_history(self) -> bool:
        """Whether the history is kept across epochs."""
        return self.history.carry_history

    @property
    def label_mode(self) -> str:
        """Resize rule of label maps and masks: always a nearest rule."""
        return ('nearest-exact'
                if self.interpolation == 'nearest-exact' else 'nearest')

    # ------------------------------------------------------ task hooks
    def read_targets(self, data_samples: List[Any],
                     size: Tuple[int, int]) -> Any:
        """The samples' targets as tensors, in the padded size ``size``."""
        raise NotImplementedError

    def paste_targets(self, targets: Any, rows: Tensor, boxes: Tensor,
                      src_boxes: Tensor) -> Any:
        """``targets`` with the history's targets of ``rows`` pasted:
        region ``src_boxes[b]`` of history row ``rows[b]`` resized into
        ``boxes[b]`` of image ``b``."""
        raise NotImplementedError

    def write_targets(self, data_samples: List[Any], targets: Any) -> None:
        """Put pasted targets back into the samples."""
        raise NotImplementedError

    def history_fields(self, targets: Any) -> Dict[str, Any]:
        """What the history keeps of this step's (mixed) targets."""
        raise NotImplementedError

    # ------------------------------------------------------------ step
    def forward(self, inputs: Tensor,
                data_samples: List[Any]) -> Tuple[Tensor, List[Any]]:
        """Paste the history into the batch.

        Args:
            inputs (Tensor): Normalised, padded images (N, C, H, W).
            data_samples (list): The batch's data samples (metainfo
                ``img_shape`` and the task's targets).

        Returns:
            tuple[Tensor, list]: Mixed images (a new tensor) and the samples
            (with new target objects).
        """
        check_images('inputs', inputs)
        check_finite_batch(type(self).__name__, inputs)
        n, c, h, w = inputs.shape
        if len(data_samples) != n:
            raise ValueError(f'got {len(data_samples)} data samples for {n} '
                             'images')
        self.history.sync_epoch()
        shapes = valid_shapes(data_samples, h, w)
        targets = self.read_targets(data_samples, (h, w))
        params = RecursiveMixParams(
            boxes=torch.zeros(n, 4, dtype=torch.long),
            lam=torch.ones(n),
            index=torch.arange(n),
            src_boxes=torch.zeros(n, 4, dtype=torch.long))
        mixed = inputs
        if len(self.history):
            if self.history.inputs.shape[1] != c:
                raise ValueError(f'history images have '
                                 f'{self.history.inputs.shape[1]} channels, '
                                 f'the batch has {c}')
            self.history.to_device(inputs.device)
            rows = self.history.rows(n)
            hist_shapes = self.history['shapes'][rows]
            boxes = sample_box(shapes[:, 0], shapes[:, 1], self.alpha,
                               count=n)
            src_boxes = torch.zeros(n, 4, dtype=torch.long)
            src_boxes[:, 2:] = hist_shapes.flip(1)  # (0, 0, w, h)
            sources = (self.history.inputs[:n] if n <= len(self.history) else
                       self.history.inputs[rows.to(inputs.device)])
            mixed = paste_images(inputs, sources, boxes, src_boxes,
                                 self.interpolation)
            targets = self.paste_targets(targets, rows, boxes, src_boxes)
            self.write_targets(data_samples, targets)
            area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
            lam = 1 - area.double() / shapes.prod(1).double()
            params = RecursiveMixParams(boxes, lam.float(), rows, src_boxes)
        self.last_params = params
        self.history.store(mixed, shapes=shapes,
                           **self.history_fields(targets))
        return mixed, data_samples

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, interpolation={self.interpolation!r}, '
                f'carry_history={self.carry_history}')
