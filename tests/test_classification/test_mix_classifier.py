"""MixImageClassifier itself, through mmpretrain's own data preprocessor
and heads, on a tiny ResNet: a drop-in for ImageClassifier, and several
augments drawn at random. Each augment's tests are in the file named after
it (``test_rmix.py``, ``test_recursivemix.py``, ``test_rlmix.py``)."""
import copy

import pytest
import torch

pytest.importorskip('mmpretrain')
from mmengine.optim import OptimWrapper  # noqa: E402

import mixplugins  # noqa: E402,F401
from tests._helpers import build_model, cls_model, make_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures('epoch0')


def test_drop_in_for_image_classifier():
    """Without a mixplugins augment the losses equal ImageClassifier's."""
    torch.manual_seed(0)
    mix = build_model([dict(type='CutMix', alpha=1.0)])
    plain = cls_model(dict(type='CutMix', alpha=1.0), type='ImageClassifier')
    plain.load_state_dict(mix.state_dict())
    data, _ = make_batch()
    losses = []
    for model in (mix, plain):
        import numpy as np
        np.random.seed(0)
        torch.manual_seed(0)
        out = model.data_preprocessor(copy.deepcopy(data), True)
        losses.append(model(**out, mode='loss')['loss'])
    torch.testing.assert_close(losses[0], losses[1])


def test_random_batch_augment_combination():
    model = build_model(
        [dict(type='RMix'), dict(type='RecursiveMix'),
         dict(type='CutMix', alpha=1.0)],
        probs=[0.4, 0.3, 0.3])
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    for seed in range(4):
        losses = model.train_step(make_batch(seed=seed)[0], optim)
        assert all(torch.isfinite(v) for v in losses.values())
