r"""Draw a recorded mixing step (:class:`~.record.MixRecording`) as image
grids: RGB ``uint8`` arrays, one column per image, one row per stage.

Rows, by what the augment's record holds:

* every augment: the input batch (classification: the class; detection:
  the boxes with their class names; segmentation: a row of colour-coded
  label maps, the ignore index black);
* R-Mix / RL-Mix (:class:`~mixplugins.core.rmix.RMixParams`): the saliency
  maps and the grid masks, the cells below each image's quantile tinted
  blue, with the quantile and the partner;
* RecursiveMix and segmentation CutMix (records with ``boxes``): the image
  pasted into each box -- the history row, or the partner -- with the
  pasted region (yellow) and, in segmentation, its label maps;
* an augment without a record (mmpretrain's ``Mixup``, ``CutMix``): the
  pixels it changed (unchanged ones tinted blue);
* the mixed batch, with the paste box and the top-k class names with their
  mixed label weights (classification), the boxes (detection) or the label
  maps (segmentation).

Pixels and overlays are drawn with ``torchvision.utils``
(``draw_bounding_boxes``, ``draw_segmentation_masks``) and laid out with
``make_grid`` (:mod:`.layout`). torchvision, PIL and matplotlib (its
colour map) are imported when drawing.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ...core.checks import check_int
from .layout import (Box, Cell, Rows, colour_palette, draw_rows, tint_outside)
from .record import AugmentCall, MixRecording, Targets

__all__ = ['MixRenderer', 'label_weights']

PASTE_COLOUR = (255, 212, 0)
BOX_COLOUR = (255, 32, 32)


def label_weights(scores: Tensor,
                  k: int = 3,
                  eps: float = 5e-3) -> List[Tuple[int, float]]:
    """The ``k`` largest ``(class, weight)`` pairs of a (mixed) score row,
    by decreasing weight; weights up to ``eps`` are left out."""
    values, index = scores.detach().float().cpu().sort(descending=True)
    return [(int(c), float(v)) for c, v in zip(index[:k], values[:k])
            if float(v) > eps]


class MixRenderer:
    """Draw recordings (:class:`~.record.MixRecording`) as image grids; see
    the module docstring for the rows.

    Args:
        mean (Sequence[float], optional): Per-channel mean the preprocessor
            subtracted. Defaults to None (no normalisation).
        std (Sequence[float], optional): Per-channel std it divided by.
            Defaults to None.
        bgr (bool): Whether the normalised batch is BGR (flipped to RGB for
            display). Defaults to False.
        classes (Sequence[str], optional): Class names. Defaults to None
            (class indices).
        palette (Sequence, optional): RGB colour per class (e.g. the
            dataset's ``metainfo['palette']``). Defaults to None (generated
            colours).
        max_images (int): Columns per grid, >= 1. Defaults to 8.
        top_k (int): Label weights listed per mixed image, >= 1. Defaults
            to 3.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 bgr: bool = False,
                 classes: Optional[Sequence[str]] = None,
                 palette: Optional[Sequence] = None,
                 max_images: int = 8,
                 top_k: int = 3) -> None:
        check_int('max_images', max_images, 1)
        check_int('top_k', top_k, 1)
        if (mean is None) != (std is None):
            raise ValueError('`mean` and `std` must be given together')
        self.mean = None if mean is None else torch.as_tensor(
            mean, dtype=torch.float32).reshape(-1, 1, 1).cpu()
        self.std = None if std is None else torch.as_tensor(
            std, dtype=torch.float32).reshape(-1, 1, 1).cpu()
        self.bgr = bool(bgr)
        self.classes = list(classes) if classes is not None else None
        self.max_images = max_images
        self.top_k = top_k
        n = max(len(self.classes) if self.classes else 0, 256)
        colours = colour_palette(n)
        if palette is not None:
            given = torch.as_tensor(np.asarray(palette, dtype=np.int64))
            given = given.reshape(-1, 3)[:n].clamp(0, 255)
            colours[:len(given)] = given.to(torch.uint8)
        colours[255] = 0  # the usual ignore index
        self.colours = colours

    @classmethod
    def from_preprocessor(cls,
                          data_preprocessor: nn.Module,
                          metainfo: Optional[dict] = None,
                          source_order: str = 'bgr',
                          **kwargs) -> 'MixRenderer':
        """A renderer for the batches of ``data_preprocessor``: its mean and
        std (if it normalises) and whether it swaps the channels
        (mmpretrain ``to_rgb``, mmengine/mmdet ``bgr_to_rgb`` /
        ``rgb_to_bgr``, mmseg ``channel_conversion``); ``metainfo``'s
        ``classes`` and ``palette``; ``source_order`` is the channel order
        of the dataset's images (``'bgr'`` or ``'rgb'``, see
        :func:`source_channel_order`); ``kwargs``: ``max_images``,
        ``top_k``."""
        if source_order not in ('bgr', 'rgb'):
            raise ValueError("`source_order` must be 'bgr' or 'rgb', got "
                             f'{source_order!r}')
        pre = data_preprocessor
        mean = std = None
        if getattr(pre, '_enable_normalize', False):
            mean, std = pre.mean.detach().cpu(), pre.std.detach().cpu()
        swap = bool(
            getattr(pre, 'to_rgb', False)
            or getattr(pre, '_channel_conversion', False)
            or getattr(pre, 'channel_conversion', False))
        metainfo = metainfo or {}
        return cls(mean=mean,
                   std=std,
                   bgr=(source_order == 'bgr') != swap,
                   classes=metainfo.get('classes'),
                   palette=metainfo.get('palette'),
                   **kwargs)

    # -- pixels -------------------------------------------------------------
    def to_images(self, inputs: Tensor) -> Tensor:
        """Denormalise a batch (N, C, H, W), C in {1, 3}, to displayable RGB
        uint8 (N, 3, H, W): ``round(clip(x * std + mean, 0, 255))``."""
        x = inputs.detach().float().cpu()
        if self.mean is not None:
            x = x * self.std + self.mean
        if x.shape[1] == 3 and self.bgr:
            x = x.flip(1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x[:, :3].clamp(0, 255).round().to(torch.uint8)

    def to_uint8(self, inputs: Tensor) -> np.ndarray:
        """:meth:`to_images` as an (N, H, W, 3) uint8 array."""
        return self.to_images(inputs).permute(0, 2, 3, 1).contiguous().numpy()

    def colourise(self, seg: Tensor) -> Tensor:
        """(H, W) integer labels -> (3, H, W) uint8 colours (255: black)."""
        labels = seg.detach().cpu().long().clamp(0, len(self.colours) - 1)
        return self.colours[labels].permute(2, 0, 1).contiguous()

    def _heat(self, saliency: Tensor) -> Tensor:
        from matplotlib import colormaps
        s = saliency.detach().float().cpu()
        s = (s - s.min()) / (s.max() - s.min()).clamp_min(1e-12)
        rgb = colormaps['inferno'](s.numpy())[..., :3]
        return torch.from_numpy(
            (rgb * 255).round().astype(np.uint8)).permute(2, 0, 1)

    # -- text ---------------------------------------------------------------
    def class_name(self, index: int) -> str:
        """Class name of ``index``: its first synonym (ImageNet names list
        several, comma-separated), at most 16 characters."""
        if self.classes and 0 <= index < len(self.classes):
            name = str(self.classes[index]).split(',')[0].strip()
        else:
            name = str(index)
        return name if len(name) <= 16 else name[:15] + '\u2026'

    def label_weights(self,
                      scores: Tensor,
                      k: Optional[int] = None) -> List[Tuple[int, float]]:
        """:func:`label_weights` with ``k`` defaulting to ``top_k``."""
        return label_weights(scores, self.top_k if k is None else k)

    def _weights_text(self, scores: Tensor) -> str:
        return '\n'.join(f'{self.class_name(c)} {w:.2f}'
                         for c, w in self.label_weights(scores))

    def _label_text(self, scores: Tensor) -> str:
        """The class name of a one-hot row, else its label weights."""
        pairs = self.label_weights(scores)
        if len(pairs) == 1 and pairs[0][1] > 0.995:
            return self.class_name(pairs[0][0])
        return self._weights_text(scores)

    def _seg_title(self, seg: Tensor) -> str:
        values, counts = torch.unique(seg.detach().cpu(), return_counts=True)
        names = [
            self.class_name(int(values[i]))
            for i in counts.argsort(descending=True) if int(values[i]) != 255
        ]
        return ', '.join(names[:2])

    def _instance_boxes(self, rec: dict) -> List[Box]:
        labels = rec.get('labels')
        out = []
        for j, box in enumerate(rec.get('bboxes', torch.zeros(0, 4))):
            label = int(labels[j]) if labels is not None else -1
            colour = (tuple(
                int(c)
                for c in self.colours[label %
                                      len(self.colours)]) if label >= 0 else
                      (255, 255, 255))
            out.append(
                Box(box.tolist(), colour,
                    self.class_name(label) if label >= 0 else None))
        return out

    # -- rows ---------------------------------------------------------------
    def _target_rows(self, images: Tensor, targets: Targets, label: str,
                     prefix: bool) -> Rows:
        """The row of ``images`` with their targets, and for label maps a
        row of them."""
        cells = []
        for i, img in enumerate(images):
            title, boxes = f'#{i}' if prefix else '', []
            if isinstance(targets, Tensor):
                text = self._label_text(targets[i])
                title = f'#{i}: {text}' if prefix else text
            elif isinstance(targets, list) and 'bboxes' in targets[i]:
                boxes = self._instance_boxes(targets[i])
                k = len(boxes)
                title = (f'#{i}: ' if prefix else
                         '') + (f'{k} box' + ('' if k == 1 else 'es'))
            cells.append(Cell(img, title, boxes))
        rows = [(label, cells)]
        if isinstance(targets, list) and 'sem_seg' in targets[0]:
            rows.append(('labels' if prefix else f'{label}\nlabels', [
                Cell(self.colourise(t['sem_seg']),
                     self._seg_title(t['sem_seg']))
                for t in targets[:len(images)]
            ]))
        return rows

    def _rmix_rows(self, call: AugmentCall, images: Tensor,
                   notes: List[str]) -> Rows:
        from mixplugins.core.rmix import upsample_masks
        p, n = call.params, len(images)
        grid, index = int(p.grid), p.index.detach().cpu()
        notes += [
            f'grid {grid}x{grid}',
            f'lam={float(p.lam):.3f} (blend where the masks agree)'
        ]
        rows: Rows = []
        if p.saliency is not None:
            rows.append(
                ('saliency', [Cell(self._heat(s)) for s in p.saliency[:n]]))
        if p.masks is not None:
            masks = upsample_masks(p.masks[:n], *images.shape[-2:]).cpu()
            cells = []
            for i in range(n):
                j = int(index[i])
                title = f'q={float(p.quantiles[i]):.2f}  partner #{j}'
                if isinstance(call.targets, Tensor):
                    title += f' ({self._label_text(call.targets[j])})'
                cells.append(
                    Cell(tint_outside(images[i], masks[i]), title, (), grid))
            rows.append((f'R-Mix mask\n{grid}x{grid} (blue:\nbelow q)', cells))
        return rows

    def _paste_rows(self, call: AugmentCall, n: int, notes: List[str]) -> Rows:
        """RecursiveMix (the history row pasted into each box) and CutMix
        (the partner's box region)."""
        p = call.params
        history = hasattr(p, 'src_boxes')
        boxes = p.boxes.detach().cpu().long()[:n]
        src_boxes = p.src_boxes.detach().cpu()[:n] if history else boxes
        index = p.index.detach().cpu()[:n]
        lam = p.lam.detach().float().cpu().reshape(-1)
        if bool((boxes[:, 2:] <= boxes[:, :2]).any(1).all()):
            notes.append('nothing pasted' +
                         (' (empty history)' if history else ''))
            return []
        if bool((boxes == boxes[:1]).all()):
            notes.append('box (x1, y1, x2, y2)='
                         f'{tuple(int(v) for v in boxes[0])}')
        if bool((lam == lam[:1]).all()):
            notes.append(f'lam={float(lam[0]):.3f}')
        notes.append('paste boxes: yellow')
        sources = call.sources if history else call.inputs
        if sources is None:
            return []
        targets = call.source_targets if history else call.targets
        picked = self.to_images(sources[index.to(sources.device)])
        label = 'history\n(pasted)' if history else 'partner\n(pasted)'
        rows = self._target_rows(picked, _pick(targets, index), label, False)
        for _, cells in rows:
            for i, cell in enumerate(cells):
                j = int(index[i])
                title = f'row {j}' if history else f'partner #{j}'
                cells[i] = cell._replace(
                    title=f'{title}: {cell.title}' if cell.title else title,
                    boxes=[
                        *cell.boxes,
                        Box(src_boxes[i].tolist(), PASTE_COLOUR)
                    ])
        return rows

    def _changed_rows(self, call: AugmentCall, images: Tensor, mixed: Tensor,
                      notes: List[str]) -> Rows:
        if call.mixed.shape != call.inputs.shape:
            notes.append('the augment changed the batch shape')
            return []
        changed = (call.mixed != call.inputs).any(1)[:len(images)].cpu()
        notes.append(f'{100 * float(changed.float().mean()):.1f}% of the '
                     'pixels changed')
        return [('changed\npixels', [
            Cell(tint_outside(mixed[i], changed[i]),
                 f'{100 * float(changed[i].float().mean()):.0f}% changed')
            for i in range(len(images))
        ])]

    def _rows(self, call: AugmentCall) -> Tuple[Rows, str]:
        n = min(call.inputs.shape[0], self.max_images)
        images = self.to_images(call.inputs[:n])
        mixed = self.to_images(call.mixed[:n])
        notes: List[str] = []
        rows = self._target_rows(images, call.targets, 'input', True)
        p = call.params
        paste = None
        if p is None:
            rows += self._changed_rows(call, images, mixed, notes)
        elif hasattr(p, 'quantiles'):
            rows += self._rmix_rows(call, images, notes)
        elif hasattr(p, 'boxes'):
            pasted = self._paste_rows(call, n, notes)
            rows += pasted
            if pasted:
                paste = p.boxes.detach().cpu()[:n]
        if torch.equal(call.inputs, call.mixed):
            notes.append('batch unchanged')
        after = self._target_rows(mixed, call.mixed_targets, 'mixed', False)
        if paste is not None:
            classify = isinstance(call.mixed_targets, Tensor)
            colour = BOX_COLOUR if classify else PASTE_COLOUR
            lam = p.lam.detach().float().cpu().reshape(-1)
            lam = lam[:n] if lam.numel() > 1 else lam.expand(n)
            for r, (_, cells) in enumerate(after):
                for i, cell in enumerate(cells):
                    title = cell.title
                    if r == 0 and not classify:  # each image's lam
                        title = ', '.join(t
                                          for t in (f'lam={float(lam[i]):.2f}',
                                                    title) if t)
                    cells[i] = cell._replace(
                        title=title,
                        boxes=[*cell.boxes,
                               Box(paste[i].tolist(), colour)])
        return rows + after, '; '.join(notes)

    def render(self,
               recording: MixRecording,
               title: str = '',
               prefix: str = 'mix') -> List[Tuple[str, np.ndarray]]:
        """Draw a recording.

        Args:
            recording (MixRecording): From :func:`~.record.record_mix` or a
                :class:`~.record.MixRecorder`.
            title (str): Text before each grid's own caption. Defaults to
                ''.
            prefix (str): Start of the returned names. Defaults to
                ``'mix'``.

        Returns:
            list[tuple[str, np.ndarray]]: ``(name, RGB uint8 (H, W, 3))``:
            one grid per augment call, named ``f'{prefix}_{augment}'``
            (with ``_{k}`` for a repeated augment); a recording without
            calls gives one grid of the preprocessor's output named
            ``f'{prefix}_batch'``, or nothing when there is none.
        """
        out: List[Tuple[str, np.ndarray]] = []
        seen: dict = {}
        for call in recording.calls:
            rows, notes = self._rows(call)
            caption = ' | '.join(t for t in (title, call.name, notes) if t)
            name = f'{prefix}_{call.name}'
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f'{name}_{seen[name] - 1}'
            out.append((name, draw_rows(rows, caption)))
        if not recording.calls and recording.inputs is not None:
            n = min(len(recording.inputs), self.max_images)
            rows = self._target_rows(self.to_images(recording.inputs[:n]),
                                     recording.targets, 'input', True)
            caption = ' | '.join(t for t in (title, 'no batch augment ran')
                                 if t)
            out.append((f'{prefix}_batch', draw_rows(rows, caption)))
        return out


def _pick(targets: Targets, index: Tensor) -> Targets:
    """Rows ``index`` of targets (scores or one dict per sample)."""
    if isinstance(targets, Tensor):
        return targets.cpu()[index]
    if isinstance(targets, list):
        return [targets[int(j)] for j in index]
    return None
