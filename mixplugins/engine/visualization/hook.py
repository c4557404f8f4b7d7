r"""``MixVisualizationHook``: draw the mixed training batch every N
iterations, to the runner's visualizer backends."""
from typing import Any, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from ...core.checks import check_choice, check_int
from .record import MixRecorder
from .render import MixRenderer

__all__ = ['MixVisualizationHook', 'inner_dataset_cfg', 'source_channel_order']


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
    """Channel order of the images a dataset config yields: ``'bgr'`` when
    its pipeline decodes files with ``LoadImageFromFile`` (mmcv decodes to
    BGR), ``'rgb'`` otherwise (e.g. mmpretrain's CIFAR arrays). Dataset
    wrappers are followed (:func:`inner_dataset_cfg`)."""
    cfg = inner_dataset_cfg(dataset_cfg)
    pipeline = cfg.get('pipeline', []) if isinstance(cfg, dict) else []
    for t in pipeline or []:
        kind = t.get('type', '') if isinstance(t, dict) else type(t).__name__
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if kind.split('.')[-1] == 'LoadImageFromFile':
            return 'bgr'
    return 'rgb'


@HOOKS.register_module()
class MixVisualizationHook(Hook):
    """Draw the mixed training batch every ``interval`` iterations.

    The mmengine form of the official R-Mix ``--vis_epoch`` option
    (`Expeditious Saliency-guided Mix-up through Random Gradient
    Thresholding <https://arxiv.org/abs/2212.04875>`_), for every batch
    augment of this package and of the host frameworks (RecursiveMix,
    `arXiv 2203.06844 <https://arxiv.org/abs/2203.06844>`_, included). On
    the chosen iterations a :class:`~.record.MixRecorder` hooks the model's
    data preprocessor (torch module hooks, removed after the iteration), so
    the grids show the batch the augment produced for that very training
    step and the record it kept (``last_params``) -- no second draw. After
    the iteration the recording is drawn by :class:`~.render.MixRenderer`
    and sent to ``runner.visualizer.add_image(name, image, step)`` (``step``
    = the 1-based iteration), i.e. to every configured visualizer backend:
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
            ``LoadImageFromFile``, see
            :func:`source_channel_order`), ``'bgr'`` or ``'rgb'``.
            Defaults to ``'auto'``.
        prefix (str): Start of the image names. Defaults to ``'mix'``.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 500,
                 max_images: int = 8,
                 top_k: int = 3,
                 channel_order: str = 'auto',
                 prefix: str = 'mix') -> None:
        for name, v in (('interval', interval), ('max_images', max_images),
                        ('top_k', top_k)):
            check_int(name, v, 1)
        check_choice('channel_order', channel_order, ('auto', 'bgr', 'rgb'))
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f'`prefix` must be a non-empty str, got '
                             f'{prefix!r}')
        self.interval = interval
        self.max_images = max_images
        self.top_k = top_k
        self.channel_order = channel_order
        self.prefix = prefix
        self._renderer: Optional[MixRenderer] = None
        self._recorder: Optional[MixRecorder] = None

    @staticmethod
    def _preprocessor(runner) -> nn.Module:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        return model.data_preprocessor

    def _make_renderer(self, runner) -> MixRenderer:
        order = self.channel_order
        if order == 'auto':
            loader_cfg = runner.cfg.get('train_dataloader') or {}
            order = source_channel_order(loader_cfg.get('dataset', {}))
        loop = getattr(runner, 'train_loop', None)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        return MixRenderer.from_preprocessor(self._preprocessor(runner),
                                             getattr(dataset, 'metainfo',
                                                     None),
                                             order,
                                             max_images=self.max_images,
                                             top_k=self.top_k)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        """Start recording this iteration's preprocessor call."""
        self._stop()
        if (self.every_n_train_iters(runner, self.interval)
                and is_main_process()):
            self._recorder = MixRecorder(self._preprocessor(runner)).start()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw what was recorded and send it to the visualizer."""
        recorder = self._recorder
        self._stop()
        if recorder is None or not recorder.done:
            return
        if self._renderer is None:
            self._renderer = self._make_renderer(runner)
        step = runner.iter + 1
        for name, image in self._renderer.render(recorder.recording,
                                                 title=f'iter {step}',
                                                 prefix=self.prefix):
            runner.visualizer.add_image(name, image, step=step)

    def _stop(self) -> None:
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None

    def after_train(self, runner) -> None:
        self._stop()
