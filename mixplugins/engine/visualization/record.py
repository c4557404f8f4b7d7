r"""Record one mixing step: the batch before and after each batch augment,
and the record (``last_params``) the augment kept of what it drew.

Nothing is replaced, wrapped or recomputed. Only torch's module hooks are
used, removed when the recording ends:

* on the data preprocessor: where an augment is not an ``nn.Module``
  (mmpretrain's ``RandomBatchAugment`` and its augments), the forward
  pre-hook computes the batch *before* mixing with the preprocessor's
  ``forward(..., training=False)`` on copies of the samples (the same
  normalisation and padding, no random draw, no augment, no side effect);
  the forward hook gives the batch *after*;
* on every augment that is an ``nn.Module`` (mmdet and
  :class:`~mixplugins.segmentation.SegBatchAugments`): its hooks see what
  it got and returned. (mmseg pads to its training ``size`` only in
  training, so an evaluation pass would not give that batch.)

Which augment ran is read from the records: each augment of this package
replaces its ``last_params`` (:class:`~mixplugins.core.rmix.RMixParams`,
:class:`~mixplugins.core.recursive.RecursiveMixParams`,
:class:`~mixplugins.core.boxes.CutMixParams`) with a new object at every
call. An augment without a record (mmpretrain's ``Mixup``, ``CutMix``) is
recorded when it changed the batch. RecursiveMix's history is kept by
reference when the step starts (its tensors are replaced, never written in
place).
"""
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

__all__ = [
    'AugmentCall', 'MixRecording', 'MixRecorder', 'record_mix',
    'iter_batch_augments', 'snapshot_targets', 'keeps_record'
]

Targets = Union[Tensor, List[Dict[str, Any]], None]

#: ``id`` of the data preprocessors being recorded (one recorder each).
_RECORDING: Set[int] = set()


@dataclass
class AugmentCall:
    """One call of one batch augment, as recorded by :class:`MixRecorder`.

    Attributes:
        name (str): Class name of the augment (for an augment without a
            record that cannot be told apart from the others configured
            with it, their names joined by ``'_or_'``).
        inputs (Tensor): Normalised batch before the augment (N, C, H, W).
        targets (Tensor | list[dict] | None): Its targets (see
            :func:`snapshot_targets`).
        mixed (Tensor): The batch after the augment.
        mixed_targets (Tensor | list[dict] | None): The targets after it.
        params (NamedTuple, optional): The augment's ``last_params`` of this
            call, None for an augment without a record.
        sources (Tensor, optional): The images pasted from when they are
            not the batch itself: RecursiveMix's history (rows picked by
            ``params.index``). Defaults to None.
        source_targets (Tensor | list[dict] | None): Their targets when the
            history keeps them (scores (M, K) in classification, label maps
            in segmentation). Defaults to None.
    """
    name: str
    inputs: Tensor
    targets: Targets
    mixed: Tensor
    mixed_targets: Targets
    params: Optional[Any] = None
    sources: Optional[Tensor] = None
    source_targets: Targets = None


@dataclass
class MixRecording:
    """What a :class:`MixRecorder` saw in one training call of a data
    preprocessor.

    Attributes:
        calls (list[AugmentCall]): The augment calls, in order (empty when
            none ran, e.g. ``RandomBatchAugment`` drew "no augment").
        inputs (Tensor, optional): The preprocessor's output batch.
        targets (Tensor | list[dict] | None): Its targets.
    """
    calls: List[AugmentCall] = field(default_factory=list)
    inputs: Optional[Tensor] = None
    targets: Targets = None


def _get(sample: Any, key: str) -> Any:
    try:
        return sample.get(key, None)
    except (AttributeError, TypeError):
        return getattr(sample, key, None)


def _one_hot(samples: List[Any], num_classes: Optional[int]) -> Tensor:
    """One-hot (N, K) of each sample's first ``gt_label``."""
    labels = [
        _get(s, 'gt_label').detach().reshape(-1)[:1].cpu() for s in samples
    ]
    present = [int(lb) for lb in labels if lb.numel()]
    num = int(num_classes or _get(samples[0], 'num_classes')
              or max(present, default=0) + 1)
    out = torch.zeros(len(samples), num)
    for i, lb in enumerate(labels):
        if lb.numel():
            out[i, int(lb)] = 1.0
    return out


def snapshot_targets(targets: Any,
                     num_classes: Optional[int] = None) -> Targets:
    """A detached copy of a batch's targets, in a framework-neutral form.

    Args:
        targets (Tensor | Sequence | None): Scores (N, K), or data samples
            (mmpretrain ``DataSample``, mmdet ``DetDataSample``, mmseg
            ``SegDataSample``).
        num_classes (int, optional): K of the one-hot scores made from
            ``gt_label``. Defaults to None (the samples' ``num_classes``,
            else the largest label + 1).

    Returns:
        Tensor | list[dict] | None: Float scores (N, K) on the CPU for scores
        and classification samples (``gt_score``, else one-hot
        ``gt_label``); otherwise one dict per sample with the keys present
        among ``img_shape`` ((h, w)), ``bboxes`` (float (k, 4) xyxy),
        ``labels`` ((k,) int64) and ``sem_seg`` ((H, W) int64).
    """
    if targets is None:
        return None
    if isinstance(targets, Tensor):
        return targets.detach().float().cpu().clone()
    samples = list(targets)
    if not samples:
        return None
    first = samples[0]
    if _get(first, 'gt_score') is not None:
        return torch.stack(
            [_get(s, 'gt_score').detach().float().cpu() for s in samples])
    if _get(first, 'gt_label') is not None and _get(first,
                                                    'gt_instances') is None:
        return _one_hot(samples, num_classes)
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


def keeps_record(aug: Any) -> bool:
    """Whether ``aug`` keeps a ``last_params`` record (this package's)."""
    return hasattr(
        aug, 'last_params') or type(aug).__module__.startswith('mixplugins.')


def _history(aug: Any) -> Tuple[Optional[Tensor], Targets]:
    """RecursiveMix's history images (``aug.history.inputs``, by reference)
    and, when its fields hold them, their targets: classification scores
    ``targets`` (M, K), detection ``samples`` (their ``gt_instances``) or
    segmentation ``maps`` (``gt_sem_seg``), as :func:`snapshot_targets`
    gives them."""
    try:
        history = getattr(aug, 'history', None)
    except (RuntimeError, AttributeError):  # e.g. not bound to a model
        return None, None
    inputs = getattr(history, 'inputs', None)
    if not isinstance(inputs, Tensor) or inputs.numel() == 0:
        return None, None
    fields = getattr(history, 'fields', None)
    fields = fields if isinstance(fields, dict) else {}
    scores, maps = fields.get('targets'), fields.get('maps')
    samples = fields.get('samples')
    if isinstance(scores, Tensor) and scores.dim() == 2:
        return inputs, scores
    if isinstance(maps, dict) and isinstance(maps.get('gt_sem_seg'), Tensor):
        return inputs, [{
            'sem_seg': m.reshape(m.shape[-2:])
        } for m in maps['gt_sem_seg']]
    if isinstance(samples, list):
        instances = [(s or {}).get('gt_instances') or {} for s in samples]
        return inputs, [{
            k: v
            for k, v in inst.items()
            if k in ('bboxes', 'labels') and isinstance(v, Tensor)
        } for inst in instances]
    return inputs, None


def _call_args(args: tuple, kwargs: dict, names: Tuple[str, str]) -> tuple:
    """The first two arguments of a call, positional or by ``names``."""
    values = list(args[:2])
    for name in names[len(values):]:
        values.append(kwargs.get(name))
    return tuple(values)


def _clone_samples(samples: Any) -> Any:
    if isinstance(samples, (list, tuple)):
        return [s.clone() if hasattr(s, 'clone') else s for s in samples]
    return samples


class _Pending:
    """An augment call in progress: what was there before it."""

    def __init__(self, aug: Any, inputs: Tensor, targets: Targets) -> None:
        self.aug = aug
        self.params = getattr(aug, 'last_params', None)
        self.inputs = inputs
        self.targets = targets
        self.sources, self.source_targets = _history(aug)

    def finish(self, mixed: Tensor, mixed_targets: Targets) -> AugmentCall:
        """The call, given what the augment returned; ``params`` only when
        the augment replaced its ``last_params`` (it ran)."""
        params = getattr(self.aug, 'last_params', None)
        ran = params is not None and params is not self.params
        return AugmentCall(name=type(self.aug).__name__,
                           inputs=self.inputs,
                           targets=self.targets,
                           mixed=mixed.detach().clone(),
                           mixed_targets=mixed_targets,
                           params=params if ran else None,
                           sources=self.sources if ran else None,
                           source_targets=self.source_targets if ran else None)


class MixRecorder:
    """Record the first training call of a data preprocessor.

    :meth:`start` registers the hooks described in the module docstring,
    :meth:`stop` removes them; :attr:`recording` is filled in between. Only
    the first call with ``training=True`` is recorded.

    Args:
        data_preprocessor (nn.Module): The model's data preprocessor
            (mmpretrain ``ClsDataPreprocessor``, mmdet
            ``DetDataPreprocessor``, :class:`~mixplugins.segmentation.
            MixSegDataPreProcessor`, ...).
    """

    def __init__(self, data_preprocessor: nn.Module) -> None:
        self.pre = data_preprocessor
        self.recording = MixRecording()
        self.augments = list(iter_batch_augments(data_preprocessor))
        self._handles: list = []
        self._state = 'idle'  # -> 'recording' -> 'done'
        self._plain: List[_Pending] = []
        self._pending: Dict[int, _Pending] = {}

    @property
    def done(self) -> bool:
        """Whether a training call has been recorded."""
        return self._state == 'done'

    def start(self) -> 'MixRecorder':
        """Register the hooks.

        Raises:
            RuntimeError: If the preprocessor is already being recorded.
        """
        if id(self.pre) in _RECORDING:
            raise RuntimeError('this data preprocessor is already being '
                               'recorded; recordings cannot be nested')
        _RECORDING.add(id(self.pre))
        add = self._handles.append
        add(
            self.pre.register_forward_pre_hook(self._pre_begin,
                                               with_kwargs=True))
        add(self.pre.register_forward_hook(self._pre_end, with_kwargs=True))
        for aug in self.augments:
            if isinstance(aug, nn.Module):
                add(
                    aug.register_forward_pre_hook(self._aug_begin,
                                                  with_kwargs=True))
                add(aug.register_forward_hook(self._aug_end, with_kwargs=True))
        return self

    def stop(self) -> None:
        """Remove the hooks (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        _RECORDING.discard(id(self.pre))
        self._plain, self._pending = [], {}

    # -- the data preprocessor ------------------------------------------
    def _pre_begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        data, training = _call_args(args, kwargs, ('data', 'training'))
        if self._state != 'idle' or not training:
            return
        self._state = 'recording'
        plain = [a for a in self.augments if not isinstance(a, nn.Module)]
        if not plain:
            return
        try:  # forward, not __call__: no hook runs
            with torch.no_grad():
                before = module.forward(dict(data,
                                             data_samples=_clone_samples(
                                                 data.get('data_samples'))),
                                        training=False)
        except Exception as e:  # drawing must not stop the training step
            print_log(
                f'MixRecorder: no recording, the evaluation pass of '
                f'{type(module).__name__} failed ({e!r})',
                logger='current',
                level=logging.WARNING)
            return
        inputs = before['inputs'].detach().clone()
        targets = snapshot_targets(before.get('data_samples'),
                                   getattr(module, 'num_classes', None))
        self._plain = [_Pending(a, inputs, targets) for a in plain]

    def _pre_end(self, module: nn.Module, args: tuple, kwargs: dict,
                 output: Any) -> None:
        if self._state != 'recording':
            return
        self._state = 'done'
        if not (isinstance(output, dict)
                and isinstance(output.get('inputs'), Tensor)):
            return
        num_classes = getattr(module, 'num_classes', None)
        after = output['inputs']
        after_targets = snapshot_targets(output.get('data_samples'),
                                         num_classes)
        self.recording.inputs = after.detach().clone()
        self.recording.targets = after_targets
        if not self._plain:
            return
        calls = [p.finish(after, after_targets) for p in self._plain]
        ran = [c for c in calls if c.params is not None]
        if not ran and _changed(self._plain[0], after, after_targets):
            # an augment without a record: named when it is the only one
            names = [
                c.name for c, p in zip(calls, self._plain)
                if not keeps_record(p.aug)
            ]
            ran = [calls[0]]
            ran[0].name = '_or_'.join(names) or 'BatchAugment'
        self.recording.calls.extend(ran)
        self._plain = []

    # -- augments that are modules --------------------------------------
    def _aug_begin(self, aug: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._state != 'recording':
            return
        inputs, samples = _call_args(args, kwargs, ('inputs', 'data_samples'))
        if isinstance(inputs, Tensor):
            self._pending[id(aug)] = _Pending(aug,
                                              inputs.detach().clone(),
                                              snapshot_targets(samples))

    def _aug_end(self, aug: nn.Module, args: tuple, kwargs: dict,
                 output: Any) -> None:
        pending = self._pending.pop(id(aug), None)
        if pending is None or not (isinstance(output, (tuple, list))
                                   and len(output) == 2):
            return
        call = pending.finish(output[0], snapshot_targets(output[1]))
        if call.params is not None or _changed(pending, call.mixed,
                                               call.mixed_targets):
            self.recording.calls.append(call)


def _changed(before: _Pending, after: Tensor, targets: Targets) -> bool:
    """Whether the batch or its scores differ from ``before``."""
    if after.shape != before.inputs.shape:
        return True
    if not torch.equal(after.detach(), before.inputs):
        return True
    return (isinstance(targets, Tensor) and isinstance(before.targets, Tensor)
            and not torch.equal(targets, before.targets))


@contextlib.contextmanager
def record_mix(data_preprocessor: nn.Module) -> Iterator[MixRecording]:
    """Record what the batch augments of a data preprocessor do.

    The first training call of ``data_preprocessor`` inside the block is
    recorded (see :class:`MixRecorder`); the hooks are removed when the
    block ends, also on an exception. Nothing is recomputed and no random
    number is drawn, so the step is the one training takes.

    Example::

        with record_mix(model.data_preprocessor) as rec:
            data = model.data_preprocessor(batch, training=True)
        rec.calls[0].params  # the augment's last_params

    Args:
        data_preprocessor (nn.Module): The model's data preprocessor.

    Yields:
        MixRecording: Filled while the block runs.

    Raises:
        RuntimeError: If the preprocessor is already being recorded.
    """
    recorder = MixRecorder(data_preprocessor).start()
    try:
        yield recorder.recording
    finally:
        recorder.stop()
