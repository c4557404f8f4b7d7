"""Tests of ``benchmarks/reproduce_digits.py``: the protocol is one for all
methods (same model, optimiser, schedule, data; each method its paper's
CIFAR hyper-parameters), the low-data split is a stratified 20 %, and the
``--quick`` smoke test runs all six methods end to end (slow)."""
import json
import os.path as osp
import subprocess
import sys
from collections import Counter

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(REPO, 'benchmarks')
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import reproduce_digits as rd  # noqa: E402

ALL = ['baseline', 'mixup', 'cutmix', 'rmix', 'rlmix', 'recursivemix']


def test_protocol_is_fixed():
    p = rd.PROTOCOL
    assert p['seeds'] == (0, 1, 2, 3, 4)
    assert p['train_fraction'] == 0.2
    assert p['severities'] == (1, 2, 3, 4, 5)
    assert p['occlusion_reported'] in p['occlusion']
    assert p['fgsm_reported'] in p['fgsm']
    assert list(rd.METHODS) == ALL
    # the papers' CIFAR settings, nothing else
    aug = {n: (c or {}).get('augments', [{}])[0] for n, c in
           rd.METHODS.items()}
    assert aug['mixup'] == dict(type='Mixup', alpha=1.0)
    assert aug['cutmix'] == dict(type='CutMix', alpha=1.0)
    assert rd.METHODS['cutmix']['probs'] == [0.5]
    assert aug['rmix']['alpha'] == 1.0 and aug['rmix']['grids'] == (2, 4)
    assert aug['rlmix']['alpha'] == 1.0
    assert aug['recursivemix']['alpha'] == 0.5
    assert aug['recursivemix']['omega'] == 0.1


def test_rlmix_rollout_scales_with_the_schedule():
    cfg = rd.method_train_cfg('rlmix', 360)['augments'][0]
    assert (cfg['n_steps'], cfg['batch_size']) == (36, 9)
    assert cfg['total_timesteps'] == 360
    small = rd.method_train_cfg('rlmix', 18)['augments'][0]
    assert (small['n_steps'], small['batch_size']) == (4, 2)
    # the module-level table is not modified
    assert 'n_steps' not in rd.METHODS['rlmix']['augments'][0]
    assert rd.method_train_cfg('baseline', 360) is None


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return rd.prepare_data(str(tmp_path_factory.mktemp('digits')),
                           rd.protocol(False))


def test_split_is_a_stratified_fifth(data):
    with open(data['ann_file']) as f:
        lines = f.read().split()
    labels = Counter(int(label) for label in lines[1::2])
    assert data['num_train'] == sum(labels.values()) == 299
    assert data['num_train_full'] == 1497 and data['num_test'] == 300
    assert all(28 <= n <= 31 for n in labels.values())
    for name, label in zip(lines[::2], lines[1::2]):
        assert name.startswith(f'{label}/')
        assert osp.isfile(osp.join(data['data_root'], 'train', name))
    again = rd.prepare_data(osp.dirname(osp.dirname(data['data_root'])),
                            rd.protocol(False))
    with open(again['ann_file']) as f:
        assert f.read().split() == lines


def test_one_model_and_schedule_for_every_method(data, tmp_path):
    proto = rd.protocol(False)
    cfgs = {
        name: rd.build_config(name, 3, data, proto, str(tmp_path / name))
        for name in ALL
    }
    base = cfgs['baseline']
    for name, cfg in cfgs.items():
        assert cfg.model.backbone == base.model.backbone, name
        assert cfg.model.type == 'MixImageClassifier'
        assert cfg.optim_wrapper == base.optim_wrapper
        assert cfg.param_scheduler == base.param_scheduler
        assert cfg.train_cfg.max_epochs == proto['epochs']
        assert cfg.train_dataloader.batch_size == proto['batch_size']
        assert cfg.train_dataloader.drop_last
        assert cfg.train_dataloader.dataset.ann_file == data['ann_file']
        assert cfg.train_dataloader.dataset.pipeline == \
            base.train_dataloader.dataset.pipeline
        assert cfg.randomness.seed == 3
        assert [m['type'] for m in cfg.val_evaluator] == [
            'Accuracy', 'CalibrationError'
        ]
        if name != 'baseline':
            assert cfg.model.head.loss.use_soft
    assert 'train_cfg' not in base.model or not base.model.train_cfg


def test_table_and_summary():
    runs = [
        dict(method=m,
             seed=s,
             train_seconds=10.0,
             numbers=dict(top1=90 + s, ece=2.0, corruption=50.0 + m.__len__(),
                          occlusion=70.0, fgsm=30.0)) for m in ('a', 'bb')
        for s in (0, 1, 2)
    ]
    summary = rd.summarize_runs(runs, ['a', 'bb'])
    assert summary['a']['top1']['mean'] == 91.0
    assert summary['a']['top1']['std'] == pytest.approx(1.0)  # ddof 1
    table = rd.format_table(summary, rd.protocol(False),
                            dict(num_train=299, num_train_full=1497,
                                 num_test=300))
    assert '| a | 91.00 ± 1.00 | 2.00 ± 0.00 | 51.00 ± 0.00 |' in table
    assert 'Mean ± sample std over 5 seed(s)' in table


@pytest.mark.slow
def test_quick_runs_every_method(tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    proc = subprocess.run([
        sys.executable,
        osp.join(BENCH, 'reproduce_digits.py'), '--quick', '--out-dir',
        str(out), '--work-dir',
        str(work)
    ],
                          cwd=str(tmp_path),
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / 'reproduce_digits_quick.md').read_text()
    for name in ALL:
        assert f'| {name} | ' in table
    assert '--quick smoke test, not a result' in table
    result = json.loads((out / 'reproduce_digits_quick.json').read_text())
    assert len(result['runs']) == 6
    for run in result['runs']:
        # the evaluation's clean numbers are the Runner's validation
        assert run['numbers']['top1'] == pytest.approx(
            run['runner_val']['accuracy/top1'], abs=1e-3)
        assert run['numbers']['ece'] == pytest.approx(
            run['runner_val']['calibration/ece'], abs=1e-3)
        assert run['iterations'] == 2 * 9
    assert (out / 'reproduce_digits_quick.png').stat().st_size > 10_000
    # finished runs are reused
    again = subprocess.run([
        sys.executable,
        osp.join(BENCH, 'reproduce_digits.py'), '--quick', '--methods',
        'baseline', '--out-dir',
        str(out), '--work-dir',
        str(work)
    ],
                           cwd=str(tmp_path),
                           capture_output=True,
                           text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'baseline seed 0: kept' in again.stdout
