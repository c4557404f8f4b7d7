"""LerpColorJitter / PCALighting against a plain re-statement of the
RecursiveMix ``aug_plus`` reference (fb.resnet.torch formulas on ``[0, 1]``
CHW RGB tensors, before ``Normalize``)."""
import itertools
from unittest import mock

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import TRANSFORMS

from mixplugins.classification.transforms import (IMAGENET_PCA_EIGVAL,
                                                  IMAGENET_PCA_EIGVEC,
                                                  LerpColorJitter, PCALighting)

# ---------------------------------------------------------------- reference
# RecursiveMix utils.py (Grayscale, Brightness, Contrast, Saturation,
# ColorJitter, Lighting), applied to a float [0, 1] RGB CHW tensor.


def ref_grayscale(img):
    gs = img.clone()
    gs[0] = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    gs[1] = gs[0]
    gs[2] = gs[0]
    return gs


def ref_jitter(img, params):
    for op, a in params:
        if op == 'brightness':
            target = torch.zeros_like(img)
        elif op == 'contrast':
            target = ref_grayscale(img)
            target.fill_(target.mean().item())
        else:
            target = ref_grayscale(img)
        img = img.lerp(target, a)
    return img


def ref_lighting(img, alpha):
    eigval = torch.tensor(IMAGENET_PCA_EIGVAL, dtype=torch.float64)
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC, dtype=torch.float64)
    rgb = (eigvec * alpha.view(1, 3) * eigval.view(1, 3)).sum(1)
    return img + rgb.view(3, 1, 1).to(img.dtype)


def to_ref(img_hwc, channel_order):
    """mm image (H, W, 3) uint8 in channel_order -> reference [0, 1] RGB."""
    rgb = img_hwc[..., ::-1] if channel_order == 'bgr' else img_hwc
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(
        2, 0, 1).double() / 255.


def from_ref(tensor_chw, channel_order):
    """reference [0, 1] RGB CHW -> (H, W, 3) in 0-255 and channel_order."""
    hwc = (tensor_chw * 255.).permute(1, 2, 0).numpy()
    return hwc[..., ::-1] if channel_order == 'bgr' else hwc


def _image(seed=0, shape=(7, 9, 3)):
    return np.random.default_rng(seed).integers(
        0, 256, size=shape, dtype=np.uint8)


ALL_ORDERS = list(
    itertools.permutations(['brightness', 'contrast', 'saturation']))

# ------------------------------------------------------------------- jitter


@pytest.mark.parametrize('channel_order', ['bgr', 'rgb'])
@pytest.mark.parametrize('order', ALL_ORDERS)
def test_jitter_matches_reference(order, channel_order):
    factors = dict(brightness=0.31, contrast=-0.27, saturation=0.38)
    params = [(op, factors[op]) for op in order]
    img = _image()
    t = LerpColorJitter(channel_order=channel_order)
    with mock.patch.object(t, '_rand_params', return_value=params):
        out = t(dict(img=img.copy()))['img']
    expected = from_ref(
        ref_jitter(to_ref(img, channel_order), params), channel_order)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_jitter_no_clipping():
    img = np.full((4, 4, 3), 250, dtype=np.uint8)
    img[0, 0] = (0, 10, 200)
    t = LerpColorJitter(channel_order='rgb')
    outs = []
    for order in ALL_ORDERS:
        params = [(op, -0.4) for op in order]
        with mock.patch.object(t, '_rand_params', return_value=params):
            outs.append(t(dict(img=img))['img'])
    # a factor of -0.4 pushes away from the target: beyond 255, unclipped
    assert min(o.max() for o in outs) > 255
    # the three blends are linear and commute (each keeps or scales the
    # gray level the next one uses), so the order changes nothing
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5)
    assert img[1, 1, 0] == 250  # input untouched


def test_jitter_random_params():
    np.random.seed(3)
    t = LerpColorJitter(brightness=0.4, contrast=0.2, saturation=0.1)
    seen_orders = set()
    for _ in range(300):
        params = t._rand_params()
        ops = [op for op, _ in params]
        assert sorted(ops) == ['brightness', 'contrast', 'saturation']
        seen_orders.add(tuple(ops))
        for op, a in params:
            assert -getattr(t, op) <= a <= getattr(t, op)
    assert seen_orders == set(ALL_ORDERS)
    # a strength of 0 disables the operation, as in the reference
    t = LerpColorJitter(brightness=0.4, contrast=0., saturation=0.4)
    assert {op for op, _ in t._rand_params()} == {'brightness', 'saturation'}


def test_jitter_factor_distribution_is_uniform():
    np.random.seed(0)
    t = LerpColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    draws = np.array([a for _ in range(4000) for _, a in t._rand_params()])
    # U(-0.4, 0.4): mean 0, std 0.4 / sqrt(3)
    assert abs(draws.mean()) < 0.01
    assert draws.std() == pytest.approx(0.4 / np.sqrt(3), rel=0.03)


# ----------------------------------------------------------------- lighting


@pytest.mark.parametrize('channel_order', ['bgr', 'rgb'])
def test_lighting_matches_reference(channel_order):
    alpha = np.array([0.13, -0.07, 0.21])
    img = _image(1)
    t = PCALighting(channel_order=channel_order)
    with mock.patch.object(t, '_rand_params', return_value=alpha):
        out = t(dict(img=img))['img']
    expected = from_ref(
        ref_lighting(to_ref(img, channel_order), torch.from_numpy(alpha)),
        channel_order)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    # the offset is in 0-255 units: 255 x the 0-1 reference offset
    offset = out.astype(np.float64) - img
    assert np.allclose(offset, offset[0, 0], atol=1e-3)


def test_lighting_value_scale_one_for_unit_images():
    alpha = np.array([0.1, 0.2, -0.3])
    img = np.random.default_rng(2).random((5, 6, 3)).astype(np.float32)
    t = PCALighting(value_scale=1.0, channel_order='rgb')
    with mock.patch.object(t, '_rand_params', return_value=alpha):
        out = t(dict(img=img))['img']
    ref = ref_lighting(
        torch.from_numpy(img).permute(2, 0, 1).double(),
        torch.from_numpy(alpha))
    np.testing.assert_allclose(out, ref.permute(1, 2, 0).numpy(), atol=1e-6)


def test_lighting_offset_covariance():
    """Offsets are N(0, V diag(sigma^2 lambda^2) V^T) x 255^2."""
    np.random.seed(0)
    t = PCALighting(channel_order='rgb')
    offsets = np.stack([t.offset(t._rand_params()) for _ in range(20000)])
    vec = np.array(IMAGENET_PCA_EIGVEC)
    lam = np.array(IMAGENET_PCA_EIGVAL)
    expected = 255.**2 * vec @ np.diag((0.1 * lam)**2) @ vec.T
    np.testing.assert_allclose(
        np.cov(offsets.T), expected, rtol=0.05, atol=0.05)


def test_lighting_does_not_wrap_around():
    img = np.zeros((3, 3, 3), dtype=np.uint8)
    t = PCALighting(channel_order='rgb')
    alpha = np.array([1.0, 0., 0.])  # all-negative first eigen-vector
    with mock.patch.object(t, '_rand_params', return_value=alpha):
        out = t(dict(img=img))['img']
    assert (out < 0).all()  # mmpretrain's Lighting would wrap to ~240


# ----------------------------------------------------- through the mm stack


def test_pipeline_and_preprocessor_equal_reference_normalize():
    """LoadImage -> jitter -> lighting -> PackInputs -> ClsDataPreprocessor
    equals Normalize(lighting(jitter(ToTensor(img)))) of the reference."""
    img_bgr = _image(4, shape=(12, 10, 3))
    params = [('saturation', 0.2), ('brightness', -0.35), ('contrast', 0.1)]
    alpha = np.array([-0.05, 0.12, 0.3])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose([
            dict(
                type='LerpColorJitter',
                brightness=0.4,
                contrast=0.4,
                saturation=0.4,
                channel_order='bgr'),
            dict(type='PCALighting', alphastd=0.1, channel_order='bgr'),
            dict(type='PackInputs'),
        ])
    jitter, lighting = pipeline.transforms[:2]
    with mock.patch.object(jitter, '_rand_params', return_value=params), \
            mock.patch.object(lighting, '_rand_params', return_value=alpha):
        packed = pipeline(dict(img=img_bgr.copy(), gt_label=1))
    preprocessor = ClsDataPreprocessor(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True)
    out = preprocessor(
        dict(inputs=[packed['inputs']],
             data_samples=[packed['data_samples']]))['inputs'][0]

    x = ref_lighting(
        ref_jitter(to_ref(img_bgr, 'bgr'), params), torch.from_numpy(alpha))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    expected = ((x - mean) / std).float()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_registered_in_mmpretrain_transforms():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        assert isinstance(
            TRANSFORMS.build(dict(type='LerpColorJitter')), LerpColorJitter)
        assert isinstance(
            TRANSFORMS.build(dict(type='PCALighting')), PCALighting)


@pytest.mark.parametrize('cls, kwargs, match', [
    (LerpColorJitter, dict(brightness=-0.1), 'brightness'),
    (LerpColorJitter, dict(channel_order='hsv'), 'channel_order'),
    (PCALighting, dict(eigval=(1., 2.)), 'eigval'),
    (PCALighting, dict(eigvec=((1., 0.), (0., 1.))), 'eigvec'),
    (PCALighting, dict(alphastd=-1.), 'alphastd'),
    (PCALighting, dict(value_scale=0), 'value_scale'),
    (PCALighting, dict(channel_order='RGB'), 'channel_order'),
])
def test_bad_args(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize('cls, kwargs, match', [
    (LerpColorJitter, dict(saturation='0.4'), 'saturation'),
    (PCALighting, dict(alphastd=True), 'alphastd'),
])
def test_bad_arg_types(cls, kwargs, match):
    with pytest.raises(TypeError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize('cls', [LerpColorJitter, PCALighting])
def test_rejects_gray_images(cls):
    with pytest.raises(ValueError, match='colour image'):
        cls()(dict(img=np.zeros((4, 4), dtype=np.uint8)))
