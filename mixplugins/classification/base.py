"""The link between mixplugins' batch augments and their classifier.

mmpretrain calls a batch augment as ``augment(inputs, scores)`` from inside
the data preprocessor; the augment never sees the model. R-Mix needs the
model's input gradient and RecursiveMix needs its logits and last feature
map, so :class:`~mixplugins.classification.MixImageClassifier` binds itself
to every :class:`ModelBoundAugment` it finds in its preprocessor, through a
weak reference (a strong one would make a reference cycle and put the
model inside its own ``state_dict``).
"""
import weakref
from typing import Optional

__all__ = ['ModelBoundAugment']


class ModelBoundAugment:
    """Base class of the batch augments that need their classifier."""

    def __init__(self) -> None:
        self._model_ref: Optional[weakref.ReferenceType] = None

    def bind(self, model) -> None:
        """Attach the classifier (held by a weak reference)."""
        self._model_ref = weakref.ref(model)

    @property
    def model(self):
        """The bound classifier; raises a clear error when there is none."""
        model = self._model_ref() if self._model_ref is not None else None
        if model is None:
            raise RuntimeError(
                f'The batch augment {type(self).__name__} needs the model: '
                "set `model.type='MixImageClassifier'` (registered by "
                '`custom_imports=dict(imports=[\'mixplugins\'])`).')
        return model

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.__dict__.items()
                         if not k.startswith('_'))
        return f'{type(self).__name__}({args})'
