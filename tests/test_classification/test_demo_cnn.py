"""Tests of the demo backbone ``DemoCNN``."""
import pytest
import torch
from mmpretrain.registry import MODELS

import mixplugins  # noqa: F401  (registers DemoCNN)


def test_demo_cnn_feature_maps_and_out_channels():
    net = MODELS.build(dict(type='DemoCNN'))
    outs = net(torch.randn(2, 3, 32, 32))
    assert isinstance(outs, tuple) and len(outs) == 1
    assert outs[0].shape == (2, 64, 8, 8)
    assert net.out_channels == 64

    net = MODELS.build(
        dict(type='DemoCNN', widths=(8, 12, 16, 24), out_indices=(0, -2)))
    outs = net(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 32, 32), (1, 16, 8, 8)]
    assert net.out_channels == 16


def test_demo_cnn_trains_through_the_mix_classifier_with_recursivemix():
    model = MODELS.build(
        dict(type='MixImageClassifier',
             backbone=dict(type='DemoCNN', widths=(8, 16)),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead',
                       num_classes=10,
                       in_channels=16,
                       loss=dict(type='CrossEntropyLoss', use_soft=True),
                       cal_acc=False),
             train_cfg=dict(augments=[dict(type='RecursiveMix')])))
    assert model.fc_roi.in_features == 16


@pytest.mark.parametrize('kwargs, error', [
    (dict(widths=()), ValueError),
    (dict(widths='8'), TypeError),
    (dict(widths=(8, 0)), ValueError),
    (dict(widths=(8, 2.5)), ValueError),
    (dict(in_channels=0), ValueError),
    (dict(out_indices=3), ValueError),
])
def test_demo_cnn_bad_arguments(kwargs, error):
    with pytest.raises(error):
        MODELS.build(dict(type='DemoCNN', **kwargs))
