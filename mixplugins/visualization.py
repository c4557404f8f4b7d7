r"""Seeing what a batch augment did: record one mixing step and draw it.

Used by ``tools/visualize_mix.py`` (real batches of a config) and by
:class:`MixVisualizationHook` (every N training iterations, to the runner's
visualizer backends -- local files, TensorBoard, WandB -- as the official
R-Mix ``--vis_epoch`` option does).

Methods drawn:

* R-Mix -- `Expeditious Saliency-guided Mix-up through Random Gradient
  Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., AAAI'23
  Practical-DL workshop; https://github.com/minhlong94/Random-Mixup): the
  saliency maps, the grid masks with their quantiles, the partners and
  :math:`\lambda`.
* RecursiveMix -- `RecursiveMix: Mixed Learning with History
  <https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022;
  https://github.com/implus/RecursiveMix-pytorch): the paste boxes and the
  history batch being pasted, in classification, detection and segmentation.
* CutMix (mmpretrain's and this package's segmentation one), Mixup and any
  other batch augment: the batch before and after.

Three parts:

* :func:`record_mix` -- a context manager around a data preprocessor call.
  For every batch augment the preprocessor runs it records the batch before
  and after, and what the mixing kernels were *given* by the augment
  (``grid_masks``, ``mix_by_masks``, ``paste_history``, ``paste_images``,
  ``paste_seg`` in the adapter modules; ``cutmix_bbox_and_lam`` of
  mmpretrain's CutMix). It wraps, for the duration of the block, the
  augments and those names; nothing is recomputed and no random draw is
  added, so a recorded step is the step training takes.
* :class:`MixRenderer` -- draws a recording as image grids (RGB ``uint8``
  arrays; rows are the stages, columns the images), denormalised with the
  preprocessor's mean and std.
* :class:`MixVisualizationHook` -- registered in mmengine's ``HOOKS``, so
  ``custom_hooks`` of mmpretrain, mmdet and mmseg configs find it (their
  ``HOOKS`` registries are children of mmengine's).

matplotlib is imported only when drawing (``Figure`` + the Agg canvas; no
pyplot, no global backend change).
"""
import contextlib
import functools
import inspect
import sys
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

__all__ = [
    'AugmentCall', 'MixRecording', 'record_mix', 'iter_batch_augments',
    'inner_dataset_cfg', 'source_channel_order', 'snapshot_targets',
    'label_weights', 'tint_outside', 'draw_box', 'draw_grid_lines',
    'MixRenderer', 'MixVisualizationHook', 'KERNEL_TAPS', 'METHOD_TAPS'
]

#: Kernel names looked up at call time in the adapter modules; each is
#: wrapped while recording so that its arguments and result are kept.
KERNEL_TAPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('mixplugins.classification.rmix', ('grid_masks', 'mix_by_masks')),
    ('mixplugins.classification.rlmix', ('grid_masks', 'mix_by_masks')),
    ('mixplugins.classification.recursivemix', ('paste_history', )),
    ('mixplugins.detection.recursivemix', ('paste_images', )),
    ('mixplugins.segmentation.recursivemix', ('paste_images', 'paste_seg')),
    ('mixplugins.segmentation.cutmix', ('paste_images', 'paste_seg')),
)
#: Methods of augment instances wrapped while recording (mmpretrain's
#: ``CutMix`` / ``ResizeMix`` draw their box with this one).
METHOD_TAPS: Tuple[str, ...] = ('cutmix_bbox_and_lam', )

#: Layout of the grids, in pixels at :data:`DPI`.
DPI = 100
LEFT_PX, RIGHT_PX, TOP_PX, BOTTOM_PX = 130, 10, 44, 8
TITLE_PX, GAP_PX = 46, 12
#: Narrower grids are widened (on the right) so that the caption fits.
MIN_WIDTH_PX = 720
#: Cell height for images up to :data:`SMALL_IMAGE_PX` tall, and above.
SMALL_CELL_PX, LARGE_CELL_PX, SMALL_IMAGE_PX = 160, 300, 96

Targets = Union[Tensor, List[Dict[str, Any]], None]

_PASTE_COLOUR = '#ffd400'
_BOX_COLOUR = '#ff2020'


# ---------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------
@dataclass
class AugmentCall:
    """One call of one batch augment, as recorded by :func:`record_mix`.

    Attributes:
        name (str): Class name of the augment.
        inputs (Tensor): Normalised batch given to it (N, C, H, W).
        targets (Tensor | list[dict] | None): Its targets: float scores
            (N, K) in classification, else one dict per sample (see
            :func:`snapshot_targets`).
        mixed (Tensor): The batch it returned.
        mixed_targets (Tensor | list[dict] | None): The targets it returned.
        taps (dict[str, list[dict]]): Per tapped kernel (see
            :data:`KERNEL_TAPS`), one dict per call: its arguments by name
            and ``'result'``.
    """
    name: str
    inputs: Tensor
    targets: Targets
    mixed: Optional[Tensor] = None
    mixed_targets: Targets = None
    taps: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)

    def tap(self, name: str) -> Optional[Dict[str, Any]]:
        """The first recorded call of kernel ``name``, or None."""
        calls = self.taps.get(name)
        return calls[0] if calls else None


@dataclass
class MixRecording:
    """What :func:`record_mix` saw during one preprocessor call.

    Attributes:
        calls (list[AugmentCall]): The augment calls, in order (empty when
            the preprocessor ran none, e.g. a config without batch augments
            or a ``RandomBatchAugment`` that drew "no augment").
        inputs (Tensor, optional): The preprocessor's output batch, when
            given to :meth:`set_output`.
        targets (Tensor | list[dict] | None): Its targets.
    """
    calls: List[AugmentCall] = field(default_factory=list)
    inputs: Optional[Tensor] = None
    targets: Targets = None

    def set_output(self, data: Dict[str, Any]) -> None:
        """Keep the preprocessor's output ``{'inputs', 'data_samples'}``."""
        inputs = data.get('inputs') if isinstance(data, dict) else None
        if isinstance(inputs, Tensor):
            self.inputs = _freeze(inputs)
            self.targets = snapshot_targets(data.get('data_samples'))


def _freeze(value: Any) -> Any:
    """Detached copies of the tensors in ``value`` (tuples/lists/dicts)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, list):
        return [_freeze(v) for v in value]
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def _get(sample: Any, key: str) -> Any:
    try:
        return sample.get(key, None)
    except (AttributeError, TypeError):
        return getattr(sample, key, None)


def snapshot_targets(targets: Any) -> Targets:
    """A detached copy of a batch's targets, in a framework-neutral form.

    Args:
        targets (Tensor | Sequence | None): Scores (N, K) as a batch augment
            of mmpretrain gets them, or data samples (mmpretrain
            ``DataSample``, mmdet ``DetDataSample``, mmseg
            ``SegDataSample``).

    Returns:
        Tensor | list[dict] | None: Float scores (N, K) for scores and
        classification samples (``gt_score``, or one-hot ``gt_label``);
        otherwise one dict per sample with the keys present among
        ``img_shape`` ((h, w)), ``bboxes`` (float (k, 4) xyxy), ``labels``
        ((k,) int64) and ``sem_seg`` ((H, W) int64).
    """
    if targets is None:
        return None
    if isinstance(targets, Tensor):
        return targets.detach().float().clone()
    samples = list(targets)
    if not samples:
        return None
    first = samples[0]
    if _get(first, 'gt_score') is not None:
        return torch.stack(
            [_get(s, 'gt_score').detach().float() for s in samples]).clone()
    if _get(first, 'gt_label') is not None and _get(first,
                                                    'gt_instances') is None:
        labels = [
            _get(s, 'gt_label').detach().reshape(-1)[:1] for s in samples
        ]
        num = _get(first, 'num_classes') or int(
            max(int(lb.max()) for lb in labels if lb.numel()) + 1)
        out = torch.zeros(len(samples), int(num))
        for i, lb in enumerate(labels):
            if lb.numel():
                out[i, int(lb[0])] = 1.0
        return out
    out = []
    for s in samples:
        rec: Dict[str, Any] = {}
        meta = getattr(s, 'metainfo', {}) or {}
        if 'img_shape' in meta:
            rec['img_shape'] = tuple(int(v) for v in meta['img_shape'][:2])
        inst = _get(s, 'gt_instances')
        if inst is not None:
            bboxes = _get(inst, 'bboxes')
            if bboxes is not None:
                bboxes = getattr(bboxes, 'tensor', bboxes)
                rec['bboxes'] = bboxes.detach().float().cpu().clone()
            labels = _get(inst, 'labels')
            if labels is not None:
                rec['labels'] = labels.detach().long().cpu().clone()
        seg = _get(s, 'gt_sem_seg')
        if seg is not None:
            rec['sem_seg'] = seg.data.detach().long().cpu().reshape(
                seg.data.shape[-2:]).clone()
        out.append(rec)
    return out


def iter_batch_augments(data_preprocessor: nn.Module) -> Iterator[Any]:
    """The batch augments a data preprocessor may run.

    Handles mmpretrain's ``RandomBatchAugment`` (its ``augments``, the
    "no augment" ``None`` left out), mmdet's ``ModuleList`` and
    :class:`~mixplugins.segmentation.SegBatchAugments`, and a single
    augment.

    Args:
        data_preprocessor (nn.Module): The model's data preprocessor.

    Yields:
        object: Each augment.
    """
    augs = getattr(data_preprocessor, 'batch_augments', None)
    if augs is None:
        return
    if isinstance(augs, (nn.ModuleList, nn.Sequential)):
        yield from augs
    elif isinstance(getattr(augs, 'augments', None), list):
        yield from (a for a in augs.augments if a is not None)
    else:
        yield augs


class _Recorder:
    """Installs and removes the wrappers of one :func:`record_mix` block."""

    def __init__(self, data_preprocessor: nn.Module) -> None:
        self.pre = data_preprocessor
        self.recording = MixRecording()
        self.current: Optional[AugmentCall] = None
        self._undo: List[Callable[[], None]] = []

    # -- the augment calls ------------------------------------------------
    def _begin(self, aug: Any, inputs: Tensor, targets: Any) -> None:
        self.current = AugmentCall(name=type(aug).__name__,
                                   inputs=_freeze(inputs),
                                   targets=snapshot_targets(targets))

    def _end(self, output: Any) -> None:
        call, self.current = self.current, None
        if call is None:
            return
        if isinstance(output, (tuple, list)) and len(output) == 2:
            call.mixed = _freeze(output[0])
            call.mixed_targets = snapshot_targets(output[1])
            self.recording.calls.append(call)

    def run(self, aug: Any, inputs: Tensor, targets: Any) -> Any:
        """Call a non-module augment while recording it."""
        self._begin(aug, inputs, targets)
        output = None
        try:
            output = aug(inputs, targets)
        finally:
            self._end(output)
        return output

    # -- the kernels ------------------------------------------------------
    def wrap(self, name: str, fn: Callable) -> Callable:
        """``fn`` that also records its arguments and result."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None

        @functools.wraps(fn)
        def tapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            call = self.current
            if call is not None:
                if signature is not None:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    entry = dict(bound.arguments)
                else:
                    entry = dict(args=args, **kwargs)
                entry = _freeze(entry)
                entry['result'] = _freeze(result)
                call.taps.setdefault(name, []).append(entry)
            return result

        return tapped

    # -- install / remove ---------------------------------------------------
    def install(self) -> None:
        for module_name, names in KERNEL_TAPS:
            module = sys.modules.get(module_name)
            if module is None:
                continue
            for name in names:
                original = getattr(module, name, None)
                if original is None:
                    continue
                setattr(module, name, self.wrap(name, original))
                self._undo.append(
                    functools.partial(setattr, module, name, original))
        augs = getattr(self.pre, 'batch_augments', None)
        if augs is None:
            return
        if isinstance(augs, nn.Module):
            modules = (list(augs) if isinstance(augs,
                                                (nn.ModuleList,
                                                 nn.Sequential)) else [augs])
            for aug in modules:
                self._hook_module(aug)
        elif isinstance(getattr(augs, 'augments', None), list):
            slots = augs.augments
            for i, aug in enumerate(list(slots)):
                if aug is None:
                    continue
                self._tap_methods(aug)
                slots[i] = _AugmentProxy(self, aug)
                self._undo.append(functools.partial(slots.__setitem__, i, aug))
        elif callable(augs):
            self._tap_methods(augs)
            setattr(self.pre, 'batch_augments', _AugmentProxy(self, augs))
            self._undo.append(
                functools.partial(setattr, self.pre, 'batch_augments', augs))

    def _hook_module(self, aug: nn.Module) -> None:

        def before(module, args):
            if len(args) >= 2:
                self._begin(module, args[0], args[1])

        def after(module, args, output):
            self._end(output)

        self._tap_methods(aug)
        handles = (aug.register_forward_pre_hook(before),
                   aug.register_forward_hook(after, always_call=True))
        self._undo.extend(h.remove for h in handles)

    def _tap_methods(self, aug: Any) -> None:
        for name in METHOD_TAPS:
            method = getattr(aug, name, None)
            if method is None or name in vars(aug):
                continue
            object.__setattr__(aug, name, self.wrap(name, method))
            self._undo.append(functools.partial(_del_attr, aug, name))

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def _del_attr(obj: Any, name: str) -> None:
    if name in vars(obj):
        object.__delattr__(obj, name)


class _AugmentProxy:
    """Stands in for a non-module augment inside ``RandomBatchAugment``."""

    def __init__(self, recorder: _Recorder, aug: Any) -> None:
        self._recorder, self._aug = recorder, aug

    def __call__(self, inputs: Tensor, targets: Tensor) -> Any:
        return self._recorder.run(self._aug, inputs, targets)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aug, name)


_ACTIVE: List[_Recorder] = []


@contextlib.contextmanager
def record_mix(data_preprocessor: nn.Module) -> Iterator[MixRecording]:
    """Record what the batch augments of a data preprocessor do.

    Inside the block, every batch augment that ``data_preprocessor`` runs
    is recorded as an :class:`AugmentCall`: the batch before and after, and
    the arguments and results of the mixing kernels the augment calls (see
    :data:`KERNEL_TAPS` and :data:`METHOD_TAPS`; e.g. R-Mix's saliency maps
    are the ``saliency`` argument of ``grid_masks``, its masks the result;
    RecursiveMix's boxes and history are arguments of ``paste_history`` /
    ``paste_images``). Nothing is recomputed and no random number is drawn,
    so the step is the one training takes. The wrappers are removed when
    the block ends, also on an exception.

    Example::

        with record_mix(model.data_preprocessor) as rec:
            data = model.data_preprocessor(batch, training=True)
        rec.set_output(data)

    Args:
        data_preprocessor (nn.Module): The model's data preprocessor
            (mmpretrain ``ClsDataPreprocessor``, mmdet
            ``DetDataPreprocessor``, :class:`~mixplugins.segmentation.
            MixSegDataPreProcessor`, ...).

    Yields:
        MixRecording: Filled while the block runs.

    Raises:
        RuntimeError: If another :func:`record_mix` block is active (the
            kernel wrappers are process-wide).
    """
    if _ACTIVE:
        raise RuntimeError('record_mix() blocks cannot be nested')
    recorder = _Recorder(data_preprocessor)
    _ACTIVE.append(recorder)
    try:
        recorder.install()
        yield recorder.recording
    finally:
        recorder.remove()
        _ACTIVE.remove(recorder)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def inner_dataset_cfg(dataset_cfg: Any) -> Any:
    """Follow dataset wrappers inwards to the first real dataset config.

    Args:
        dataset_cfg (dict): The ``dataset`` of a dataloader config; wrappers
            hold ``dataset=`` (``RepeatDataset``, ``ClassBalancedDataset``)
            or ``datasets=`` (``ConcatDataset``, the first one is taken).

    Returns:
        dict: The innermost dataset config (``dataset_cfg`` itself when it
        wraps nothing).
    """
    cfg = dataset_cfg
    for _ in range(16):
        if not isinstance(cfg, dict):
            break
        if isinstance(cfg.get('dataset'), dict):
            cfg = cfg['dataset']
        elif isinstance(cfg.get('datasets'),
                        (list, tuple)) and cfg['datasets']:
            cfg = cfg['datasets'][0]
        else:
            break
    return cfg


def source_channel_order(dataset_cfg: Any) -> str:
    """Channel order of the images a dataset config yields.

    ``'bgr'`` when its pipeline decodes files with ``LoadImageFromFile``
    (mmcv decodes to BGR, as OpenCV), ``'rgb'`` otherwise (e.g.
    mmpretrain's CIFAR datasets hold RGB arrays). Dataset wrappers are
    followed (:func:`inner_dataset_cfg`).

    Args:
        dataset_cfg (dict): The ``dataset`` of a dataloader config.

    Returns:
        str: ``'bgr'`` or ``'rgb'``.
    """
    cfg = inner_dataset_cfg(dataset_cfg)
    pipeline = cfg.get('pipeline', []) if isinstance(cfg, dict) else []
    for t in pipeline or []:
        kind = t.get('type', '') if isinstance(t, dict) else type(t).__name__
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if kind.split('.')[-1] == 'LoadImageFromFile':
            return 'bgr'
    return 'rgb'


def _count(boxes: Tensor) -> str:
    return f'{len(boxes)} box' + ('' if len(boxes) == 1 else 'es')


def _palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (golden-ratio hues), uint8 (n, 3)."""
    import colorsys
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s, v = (0.85, 0.95) if i % 2 == 0 else (0.6, 0.8)
        out[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)]
    return out


def label_weights(scores: Tensor,
                  k: int = 3,
                  eps: float = 5e-3) -> List[Tuple[int, float]]:
    """The ``k`` largest ``(class, weight)`` pairs of a (mixed) score row.

    Args:
        scores (Tensor): Scores of one image (K,).
        k (int): Pairs at most. Defaults to 3.
        eps (float): Weights up to ``eps`` are left out. Defaults to 5e-3.

    Returns:
        list[tuple[int, float]]: By decreasing weight.
    """
    values, index = scores.detach().float().cpu().sort(descending=True)
    return [(int(c), float(v)) for c, v in zip(index[:k], values[:k])
            if float(v) > eps]


def tint_outside(image: np.ndarray, mask: Union[Tensor,
                                                np.ndarray]) -> np.ndarray:
    """Tint the pixels outside a mask blue (R-Mix's unselected cells).

    Args:
        image (np.ndarray): RGB uint8 image (H, W, 3).
        mask (Tensor | np.ndarray): Bool mask with H x W elements.

    Returns:
        np.ndarray: A new uint8 image: unchanged inside the mask,
        ``0.35 * pixel + 0.65 * (40, 80, 200)`` outside.
    """
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    keep = np.asarray(mask).astype(bool).reshape(image.shape[:2])
    out = image.astype(np.float32)
    out[~keep] = 0.35 * out[~keep] + 0.65 * np.array([40., 80., 200.])
    return out.round().astype(np.uint8)


def draw_box(ax: Any,
             xyxy: Sequence[float],
             colour: str,
             dashed: bool = False,
             text: Optional[str] = None) -> None:
    """Draw a pixel-edge ``(x1, y1, x2, y2)`` box on an ``imshow`` axes.

    Args:
        ax (matplotlib.axes.Axes): Axes showing an image (pixel centres at
            integers).
        xyxy (Sequence[float]): Box; covers columns ``x1..x2-1``.
        colour (str): Matplotlib colour.
        dashed (bool): Dashed outline (paste boxes). Defaults to False.
        text (str, optional): Label at the top-left corner, on the box
            colour. Defaults to None.
    """
    from matplotlib.patches import Rectangle
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    ax.add_patch(
        Rectangle((x1 - 0.5, y1 - 0.5),
                  x2 - x1,
                  y2 - y1,
                  fill=False,
                  edgecolor=colour,
                  lw=1.6 if dashed else 1.2,
                  ls='--' if dashed else '-'))
    if text:
        ax.text(x1 - 0.5,
                y1 - 0.5,
                text,
                fontsize=7,
                color=_text_colour(colour),
                va='bottom',
                ha='left',
                clip_on=True,
                bbox=dict(facecolor=colour,
                          edgecolor='none',
                          pad=1,
                          alpha=0.85))


def _text_colour(colour: str) -> str:
    """Black or white, whichever reads better on ``colour``."""
    from matplotlib.colors import to_rgb
    r, g, b = to_rgb(colour)
    return 'black' if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else 'white'


def draw_grid_lines(ax: Any, grid: int, height: int, width: int) -> None:
    """Draw the cell borders of a ``grid x grid`` mixing grid (white)."""
    for k in range(1, grid):
        ax.axhline(k * height / grid - 0.5, color='white', lw=0.6, alpha=0.7)
        ax.axvline(k * width / grid - 0.5, color='white', lw=0.6, alpha=0.7)


@dataclass
class _Box:
    xyxy: Tuple[float, float, float, float]
    colour: str
    dashed: bool = False
    text: Optional[str] = None


@dataclass
class _Cell:
    image: np.ndarray
    title: str = ''
    boxes: List[_Box] = field(default_factory=list)
    grid: int = 0


class MixRenderer:
    """Draw recordings (:class:`MixRecording`) as image grids.

    Each grid has one column per image (up to ``max_images``) and one row
    per stage: the input batch; for R-Mix the saliency maps and the grid
    masks (cells under the image's quantile tinted blue); for RecursiveMix
    (and CutMix in segmentation) the image pasted into each box, with the
    pasted region; the mixed batch, with the paste box (yellow, dashed) and,
    by task, the top-k class names with their mixed label weights
    (classification), the boxes with their class names (detection) or the
    colour-coded label maps before and after (segmentation, ignore index in
    black).

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
        for name, v in (('max_images', max_images), ('top_k', top_k)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'`{name}` must be an int >= 1, got {v!r}')
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
        colours = _palette(n)
        if palette is not None:
            given = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
            colours[:min(len(given), n)] = np.clip(given[:n], 0, 255)
        colours[255:256] = 0  # the usual ignore index
        self.colours = colours

    @classmethod
    def from_preprocessor(cls,
                          data_preprocessor: nn.Module,
                          metainfo: Optional[dict] = None,
                          source_order: str = 'bgr',
                          **kwargs) -> 'MixRenderer':
        """A renderer for the batches of ``data_preprocessor``.

        Reads the mean/std it normalises with (if it does) and whether it
        swaps the channels (mmpretrain ``to_rgb``, mmengine/mmdet
        ``bgr_to_rgb``/``rgb_to_bgr``, mmseg ``channel_conversion``).

        Args:
            data_preprocessor (nn.Module): The data preprocessor.
            metainfo (dict, optional): Dataset metainfo; its ``classes`` and
                ``palette`` are used. Defaults to None.
            source_order (str): Channel order of the dataset's images,
                ``'bgr'`` or ``'rgb'`` (see :func:`source_channel_order`).
                Defaults to ``'bgr'``.
            **kwargs: ``max_images``, ``top_k`` of :class:`MixRenderer`.

        Returns:
            MixRenderer: The renderer.
        """
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
        bgr = (source_order == 'bgr') != swap
        metainfo = metainfo or {}
        return cls(mean=mean,
                   std=std,
                   bgr=bgr,
                   classes=metainfo.get('classes'),
                   palette=metainfo.get('palette'),
                   **kwargs)

    # -- pixels -------------------------------------------------------------
    def to_uint8(self, inputs: Tensor) -> np.ndarray:
        """Denormalise a batch to displayable RGB.

        Args:
            inputs (Tensor): Normalised images (N, C, H, W), C in {1, 3}.

        Returns:
            np.ndarray: (N, H, W, 3) uint8, ``round(clip(x * std + mean, 0,
            255))`` with the channels in RGB order.
        """
        x = inputs.detach().float().cpu()
        if self.mean is not None:
            x = x * self.std + self.mean
        if x.shape[1] == 3 and self.bgr:
            x = x.flip(1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x[:, :3].clamp(0, 255).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    def colourise(self, seg: Tensor) -> np.ndarray:
        """(H, W) integer labels -> (H, W, 3) uint8 colours (255: black)."""
        labels = seg.detach().cpu().long().clamp(0, len(self.colours) - 1)
        return self.colours[labels.numpy()]

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

    def _label_text(self, scores: Tensor) -> str:
        """The class name of a one-hot row, else its label weights."""
        pairs = self.label_weights(scores)
        if len(pairs) == 1 and pairs[0][1] > 0.995:
            return self.class_name(pairs[0][0])
        return self._weights_text(scores)

    def _weights_text(self, scores: Tensor, k: Optional[int] = None) -> str:
        return '\n'.join(f'{self.class_name(c)} {w:.2f}'
                         for c, w in self.label_weights(scores, k))

    def _heat(self, saliency: Tensor) -> np.ndarray:
        from matplotlib import colormaps
        s = saliency.detach().float().cpu()
        s = (s - s.min()) / (s.max() - s.min()).clamp_min(1e-12)
        rgb = colormaps['inferno'](s.numpy())[..., :3]
        return (rgb * 255).round().astype(np.uint8)

    def _instance_boxes(self, rec: Dict[str, Any]) -> List[_Box]:
        boxes = rec.get('bboxes')
        if boxes is None:
            return []
        labels = rec.get('labels')
        out = []
        for j, box in enumerate(boxes.tolist()):
            label = int(labels[j]) if labels is not None else -1
            colour = self.colours[label % len(self.colours)] if label >= 0 \
                else np.array([255, 255, 255])
            out.append(
                _Box(tuple(box),
                     '#%02x%02x%02x' % tuple(int(c) for c in colour),
                     text=self.class_name(label) if label >= 0 else None))
        return out

    def _seg_title(self, seg: Tensor) -> str:
        values, counts = torch.unique(seg.detach().cpu(), return_counts=True)
        order = counts.argsort(descending=True)
        names = [
            self.class_name(int(values[i])) for i in order
            if int(values[i]) != 255
        ][:2]
        return ', '.join(names)

    # -- rows ---------------------------------------------------------------
    def _rows(self,
              call: AugmentCall) -> Tuple[List[Tuple[str, List[_Cell]]], str]:
        n = min(call.inputs.shape[0], self.max_images)
        imgs = self.to_uint8(call.inputs[:n])
        mixed = self.to_uint8(call.mixed[:n]) if call.mixed is not None \
            else None
        before, after = call.targets, call.mixed_targets
        classify = isinstance(before, Tensor) or isinstance(after, Tensor)
        rows: List[Tuple[str, List[_Cell]]] = []
        notes: List[str] = []
        paste_boxes: List[Optional[Tuple[int, int, int, int]]] = [None] * n

        first = []
        for i in range(n):
            cell = _Cell(imgs[i], f'#{i}')
            if isinstance(before, Tensor):
                cell.title = f'#{i}: ' + self._label_text(before[i])
            elif isinstance(before, list):
                cell.boxes = self._instance_boxes(before[i])
                if 'bboxes' in before[i]:
                    cell.title = f'#{i}: ' + _count(before[i]['bboxes'])
            first.append(cell)
        rows.append(('input', first))
        if isinstance(before, list) and 'sem_seg' in before[0]:
            rows.append(('labels', [
                _Cell(self.colourise(before[i]['sem_seg']),
                      self._seg_title(before[i]['sem_seg'])) for i in range(n)
            ]))

        # R-Mix / RL-Mix
        gm, mb = call.tap('grid_masks'), call.tap('mix_by_masks')
        index = None
        if mb is not None:
            index = mb['perm'].cpu()
            notes.append(f'lam={float(mb["lam"]):.3f} (blend where the '
                         'masks agree)')
        if gm is not None:
            grid, quantiles = int(gm['grid']), gm['quantiles'].cpu()
            masks = gm['result']
            rows.append(
                ('saliency',
                 [_Cell(self._heat(gm['saliency'][i])) for i in range(n)]))
            cells = []
            for i in range(n):
                title = f'q={float(quantiles[i]):.2f}'
                if index is not None:
                    j = int(index[i])
                    title += f'  partner #{j}'
                    if isinstance(before, Tensor):
                        title += f' ({self._label_text(before[j])})'
                cells.append(
                    _Cell(tint_outside(imgs[i], masks[i]), title, grid=grid))
            rows.append((f'R-Mix mask\n{grid}x{grid} (blue:\nbelow q)', cells))
            notes.insert(0, f'grid {grid}x{grid}')

        # RecursiveMix (classification)
        ph = call.tap('paste_history')
        if ph is not None:
            box = tuple(int(v) for v in ph['box'])
            lam = float(ph['result'][2])
            hist = self.to_uint8(ph['hist_inputs'][:n])
            hist_t = ph['hist_targets']
            rows.append(('history\n(pasted)', [
                _Cell(hist[i], self._label_text(hist_t[i])) for i in range(n)
            ]))
            paste_boxes = [box] * n
            notes.append(f'box (x1, y1, x2, y2)={box}, visible lam={lam:.3f}')

        # paste_images: RecursiveMix (detection, segmentation), SegCutMix
        pi = call.tap('paste_images')
        if pi is not None:
            boxes = torch.as_tensor(pi['boxes']).reshape(-1, 4).long()
            src = pi['src_boxes']
            sources = pi['sources']
            src = (torch.tensor([[0, 0, sources.shape[-1], sources.shape[-2]]
                                 ]).expand(len(boxes), 4)
                   if src is None else torch.as_tensor(src).reshape(-1, 4))
            src_img = self.to_uint8(sources[:n])
            cells = []
            for i in range(n):
                sb = tuple(float(v) for v in src[i].tolist())
                cells.append(
                    _Cell(src_img[i], 'pasted region',
                          [_Box(sb, _PASTE_COLOUR, dashed=True)]))
                paste_boxes[i] = tuple(int(v) for v in boxes[i].tolist())
            rows.append(('pasted\nimage', cells))
            ps = call.tap('paste_seg')
            if ps is not None:
                seg_src = ps['sources']
                rows.append(('pasted\nlabels', [
                    _Cell(
                        self.colourise(seg_src[i].reshape(seg_src.shape[-2:])),
                        '', [
                            _Box(tuple(float(v) for v in src[i].tolist()),
                                 _PASTE_COLOUR,
                                 dashed=True)
                        ]) for i in range(n)
                ]))
            notes.append('paste boxes: yellow, dashed')

        # mmpretrain CutMix / ResizeMix
        cb = call.tap('cutmix_bbox_and_lam')
        if cb is not None:
            (y1, y2, x1, x2), lam = cb['result']
            paste_boxes = [(int(x1), int(y1), int(x2), int(y2))] * n
            notes.append(f'box (x1, y1, x2, y2)={paste_boxes[0]}, '
                         f'lam={float(lam):.3f}')

        if mixed is None:
            return rows, '; '.join(notes)
        if call.mixed is not None and torch.equal(call.inputs, call.mixed):
            notes.append('batch unchanged (e.g. empty history)')
        cells = []
        for i in range(n):
            cell = _Cell(mixed[i])
            box = paste_boxes[i]
            if box is not None:
                colour = _BOX_COLOUR if classify else _PASTE_COLOUR
                cell.boxes.append(_Box(box, colour, dashed=not classify))
            if isinstance(after, Tensor):
                cell.title = self._weights_text(after[i])
            elif isinstance(after, list):
                cell.boxes.extend(self._instance_boxes(after[i]))
                if 'bboxes' in after[i]:
                    cell.title = _count(after[i]['bboxes'])
            cells.append(cell)
        rows.append(('mixed', cells))
        if isinstance(after, list) and 'sem_seg' in after[0]:
            rows.append(('mixed\nlabels', [
                _Cell(self.colourise(after[i]['sem_seg']),
                      self._seg_title(after[i]['sem_seg']),
                      [_Box(paste_boxes[i], _PASTE_COLOUR, dashed=True)]
                      if paste_boxes[i] is not None else []) for i in range(n)
            ]))
        return rows, '; '.join(notes)

    # -- figure -------------------------------------------------------------
    @staticmethod
    def cell_size(height: int, width: int) -> Tuple[int, int]:
        """(height, width) in pixels of a grid cell for an image size.

        :data:`SMALL_CELL_PX` tall for images up to
        :data:`SMALL_IMAGE_PX` pixels tall, :data:`LARGE_CELL_PX` above;
        the width follows the aspect ratio, clipped to [0.5, 2] x the
        height.
        """
        cell_h = SMALL_CELL_PX if height <= SMALL_IMAGE_PX else LARGE_CELL_PX
        ratio = min(max(width / max(height, 1), 0.5), 2.0)
        return cell_h, int(round(cell_h * ratio))

    @staticmethod
    def figure_size(num_rows: int, num_cols: int,
                    cell: Tuple[int, int]) -> Tuple[int, int]:
        """(height, width) in pixels of a grid.

        ``width = max(LEFT_PX + cols * cell_w + (cols - 1) * GAP_PX +
        RIGHT_PX, MIN_WIDTH_PX)`` and ``height = TOP_PX + rows * (TITLE_PX +
        cell_h) + BOTTOM_PX`` (the ``*_PX`` constants of this module).
        """
        cell_h, cell_w = cell
        width = max(
            LEFT_PX + num_cols * cell_w + (num_cols - 1) * GAP_PX + RIGHT_PX,
            MIN_WIDTH_PX)
        height = TOP_PX + num_rows * (TITLE_PX + cell_h) + BOTTOM_PX
        return height, width

    def _draw(self, rows: List[Tuple[str, List[_Cell]]],
              title: str) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        num_cols = max(len(cells) for _, cells in rows)
        h0, w0 = rows[0][1][0].image.shape[:2]
        cell_h, cell_w = self.cell_size(h0, w0)
        fig_h, fig_w = self.figure_size(len(rows), num_cols, (cell_h, cell_w))
        fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
        canvas = FigureCanvasAgg(fig)
        fig.text(LEFT_PX / fig_w,
                 1 - 10 / fig_h,
                 title,
                 fontsize=10,
                 va='top',
                 ha='left',
                 wrap=True)
        small = max(h0, w0) <= SMALL_IMAGE_PX
        for r, (label, cells) in enumerate(rows):
            top = TOP_PX + r * (TITLE_PX + cell_h) + TITLE_PX
            fig.text(8 / fig_w,
                     1 - (top + cell_h / 2) / fig_h,
                     label,
                     fontsize=10,
                     va='center',
                     ha='left')
            for c, cell in enumerate(cells):
                left = LEFT_PX + c * (cell_w + GAP_PX)
                ax = fig.add_axes((left / fig_w, 1 - (top + cell_h) / fig_h,
                                   cell_w / fig_w, cell_h / fig_h))
                ih, iw = cell.image.shape[:2]
                ax.imshow(cell.image,
                          interpolation='nearest' if small else 'antialiased')
                ax.set_xticks([])
                ax.set_yticks([])
                if cell.title:
                    ax.set_title(cell.title,
                                 fontsize=8,
                                 pad=2,
                                 linespacing=1.05)
                draw_grid_lines(ax, cell.grid, ih, iw)
                for box in cell.boxes:
                    draw_box(ax, box.xyxy, box.colour, box.dashed, box.text)
                ax.set_xlim(-0.5, iw - 0.5)
                ax.set_ylim(ih - 0.5, -0.5)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        return image

    def render(self,
               recording: MixRecording,
               title: str = '',
               prefix: str = 'mix') -> List[Tuple[str, np.ndarray]]:
        """Draw a recording.

        Args:
            recording (MixRecording): From :func:`record_mix`.
            title (str): Text before each grid's own caption. Defaults to
                ''.
            prefix (str): Start of the returned names. Defaults to
                ``'mix'``.

        Returns:
            list[tuple[str, np.ndarray]]: ``(name, RGB uint8 (H, W, 3))``:
            one grid per augment call, named ``f'{prefix}_{augment}'``
            (with ``_{k}`` for a repeated augment); a recording without
            calls gives one grid of the preprocessor's output (if
            :meth:`MixRecording.set_output` was used) named
            ``f'{prefix}_batch'``, or nothing.
        """
        out: List[Tuple[str, np.ndarray]] = []
        seen: Dict[str, int] = {}
        for call in recording.calls:
            rows, notes = self._rows(call)
            caption = ' | '.join(t for t in (title, call.name, notes) if t)
            name = f'{prefix}_{call.name}'
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f'{name}_{seen[name] - 1}'
            out.append((name, self._draw(rows, caption)))
        if not recording.calls and recording.inputs is not None:
            call = AugmentCall('no batch augment ran', recording.inputs,
                               recording.targets)
            rows, _ = self._rows(call)
            caption = ' | '.join(t for t in (title, call.name) if t)
            out.append((f'{prefix}_batch', self._draw(rows, caption)))
        return out


# ---------------------------------------------------------------------------
# Hook
# ---------------------------------------------------------------------------
@HOOKS.register_module()
class MixVisualizationHook(Hook):
    """Draw the mixed training batch every ``interval`` iterations.

    The mmengine form of the official R-Mix ``--vis_epoch`` option
    (`Expeditious Saliency-guided Mix-up through Random Gradient
    Thresholding <https://arxiv.org/abs/2212.04875>`_), for every batch
    augment of this package and of the host frameworks (RecursiveMix,
    `arXiv 2203.06844 <https://arxiv.org/abs/2203.06844>`_, included). On
    the chosen iterations the hook wraps the next call of the model's data
    preprocessor in :func:`record_mix` (a forward pre-hook and a forward
    hook on the preprocessor, removed after the iteration), so the grids
    show the batch the augment produced for that very training step -- no
    extra forward, no second draw. After the iteration the recording is
    drawn by :class:`MixRenderer` and sent to
    ``runner.visualizer.add_image(name, image, step)`` (``step`` = the
    1-based iteration), i.e. to every configured visualizer backend:
    ``LocalVisBackend`` writes ``vis_data/vis_image/<name>_<step>.png``.
    Only the main process draws.

    Registered in mmengine's ``HOOKS``, which the ``HOOKS`` of mmpretrain,
    mmdet and mmseg inherit from::

        custom_hooks = [dict(type='MixVisualizationHook', interval=500)]

    Args:
        interval (int): Draw every ``interval`` training iterations, >= 1.
            Defaults to 500.
        max_images (int): Images per grid, >= 1. Defaults to 8.
        top_k (int): Label weights listed per mixed image
            (classification), >= 1. Defaults to 3.
        channel_order (str): Channel order of the dataset's images:
            ``'auto'`` (BGR when the train pipeline has
            ``LoadImageFromFile``, see :func:`source_channel_order`),
            ``'bgr'`` or ``'rgb'``. Defaults to ``'auto'``.
        prefix (str): Start of the image names. Defaults to ``'mix'``.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 500,
                 max_images: int = 8,
                 top_k: int = 3,
                 channel_order: str = 'auto',
                 prefix: str = 'mix') -> None:
        if isinstance(interval,
                      bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'`interval` must be an int >= 1, got '
                             f'{interval!r}')
        for name, v in (('max_images', max_images), ('top_k', top_k)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'`{name}` must be an int >= 1, got {v!r}')
        if channel_order not in ('auto', 'bgr', 'rgb'):
            raise ValueError("`channel_order` must be 'auto', 'bgr' or "
                             f"'rgb', got {channel_order!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f'`prefix` must be a non-empty str, got '
                             f'{prefix!r}')
        self.interval = interval
        self.max_images = max_images
        self.top_k = top_k
        self.channel_order = channel_order
        self.prefix = prefix
        self._renderer: Optional[MixRenderer] = None
        self._handles: list = []
        self._stack: Optional[contextlib.ExitStack] = None
        self._recording: Optional[MixRecording] = None

    @staticmethod
    def _preprocessor(runner) -> nn.Module:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        return model.data_preprocessor

    def _make_renderer(self, runner) -> MixRenderer:
        order = self.channel_order
        loader_cfg = runner.cfg.get('train_dataloader') or {}
        if order == 'auto':
            order = source_channel_order(loader_cfg.get('dataset', {}))
        metainfo = None
        loop = getattr(runner, 'train_loop', None)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        if dataset is not None:
            metainfo = getattr(dataset, 'metainfo', None)
        return MixRenderer.from_preprocessor(self._preprocessor(runner),
                                             metainfo,
                                             order,
                                             max_images=self.max_images,
                                             top_k=self.top_k)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        """Arm the recorder for this iteration's preprocessor call."""
        self._disarm()
        if not (self.every_n_train_iters(runner, self.interval)
                and is_main_process()):
            return
        pre = self._preprocessor(runner)

        def start(module, args):
            if self._stack is not None or self._recording is not None:
                return  # record the first call of the iteration only
            stack = contextlib.ExitStack()
            self._recording = stack.enter_context(record_mix(module))
            self._stack = stack

        def stop(module, args, output):
            if self._stack is not None:
                self._stack.close()
                self._stack = None
                if isinstance(output, dict) and self._recording is not None:
                    self._recording.set_output(output)

        self._handles = [
            pre.register_forward_pre_hook(start),
            pre.register_forward_hook(stop, always_call=True)
        ]

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw what was recorded and send it to the visualizer."""
        recording = self._recording
        self._disarm()
        if recording is None:
            return
        if self._renderer is None:
            self._renderer = self._make_renderer(runner)
        step = runner.iter + 1
        for name, image in self._renderer.render(recording,
                                                 title=f'iter {step}',
                                                 prefix=self.prefix):
            runner.visualizer.add_image(name, image, step=step)

    def _disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self._recording = None

    def after_train(self, runner) -> None:
        self._disarm()
