"""The in-training RecursiveMix variants inherit their baseline config and
hold only what they add: ``atss_r50_fpn_rm-det_1x_coco.py`` the batch
augment and the exact-resume hook on ``atss_r50_fpn_1x_coco.py``;
``upernet_r50_rm-seg_512x512_80k_ade20k.py`` the data preprocessor with the
batch augment, the hook and a public backbone on
``upernet_r50_512x512_80k_ade20k.py``. Model, optimizer, schedule, data and
runtime come from the baseline alone."""
import ast
import os.path as osp

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
AUGMENT = dict(type='RecursiveMix',
               alpha=0.5,
               interpolation='nearest',
               carry_history=False)
# variant -> (baseline, names the variant's file may assign, paths of the
# merged config that may differ from the baseline's)
VARIANTS = {
    'detection/atss_r50_fpn_rm-det_1x_coco.py':
    ('atss_r50_fpn_1x_coco.py', {'custom_imports', 'custom_hooks', 'model'},
     {'custom_hooks', 'model.data_preprocessor.batch_augments'}),
    'segmentation/upernet_r50_rm-seg_512x512_80k_ade20k.py':
    ('upernet_r50_512x512_80k_ade20k.py', {
        'custom_imports', 'custom_hooks', 'model', 'data_preprocessor',
        'backbone_checkpoint'
    }, {
        'custom_hooks', 'backbone_checkpoint', 'data_preprocessor.type',
        'data_preprocessor.batch_augments', 'model.data_preprocessor.type',
        'model.data_preprocessor.batch_augments',
        'model.backbone.init_cfg.checkpoint'
    }),
}


def _assigned(path):
    """Top-level names a config file assigns (``_base_`` excluded), with
    the value of ``_base_``."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names, base = set(), None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if target.id == '_base_':
                    base = ast.literal_eval(node.value)
                else:
                    names.add(target.id)
    return names, base


def _diff(a, b, path=''):
    """Dotted paths where two merged configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for key in set(a) | set(b):
            sub = f'{path}.{key}' if path else key
            if key not in a or key not in b:
                out.add(sub)
            else:
                out |= _diff(a[key], b[key], sub)
        return out
    return set() if a == b else {path}


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_variant_inherits_its_baseline(variant):
    baseline, allowed, _ = VARIANTS[variant]
    path = osp.join(REPO, 'configs', variant)
    names, base = _assigned(path)
    assert base == [f'./{baseline}'], base
    assert names <= allowed, sorted(names - allowed)
    header = open(path).read().split('_base_ =')[0]
    assert 'Not a published recipe' in header


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_variant_differs_from_baseline_only_by_the_augment(variant):
    baseline, _, differs = VARIANTS[variant]
    task = variant.split('/')[0]
    ours = Config.fromfile(osp.join(REPO, 'configs', variant),
                           import_custom_modules=False)
    theirs = Config.fromfile(osp.join(REPO, 'configs', task, baseline),
                             import_custom_modules=False)
    assert _diff(ours.to_dict(), theirs.to_dict()) == differs
    assert ours.custom_hooks == [dict(type='ExactResumeHook')]
    assert ours.custom_imports == dict(imports=['mixplugins'],
                                       allow_failed_imports=False)
    (augment, ) = ours.model.data_preprocessor.batch_augments
    expected = dict(AUGMENT)
    if task == 'detection':
        expected['min_visible'] = 0.3
    else:
        assert ours.model.data_preprocessor.type == 'MixSegDataPreProcessor'
        assert ours.model.backbone.init_cfg == dict(
            type='Pretrained', checkpoint='torchvision://resnet50')
    assert augment == expected
