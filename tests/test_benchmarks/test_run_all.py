"""Tests of ``benchmarks/run_all.py`` and its helpers.

The reference of the official R-Mix step (``reference_masks`` /
``reference_mix``, after ``mix_topleast_choose_top`` of
github.com/minhlong94/Random-Mixup; Luu et al., arXiv 2212.04875) is checked
by hand here, so that the benchmark's "same output" assertion compares our
kernels with an independently verified reference. The ``--quick`` run is an
end-to-end smoke test of the three sections, the JSON and the plot.
"""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(REPO, 'benchmarks')
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import _common  # noqa: E402
import run_all  # noqa: E402


def _block_map():
    # 4x4 map whose 2x2 cell means are 1 (TL), 4 (TR), 2 (BL), 3 (BR).
    return torch.tensor([[0., 2., 8., 0.], [2., 0., 0., 8.], [1., 3., 3., 3.],
                         [3., 1., 3., 3.]])


def test_reference_masks_by_hand():
    # sorted cells [1, 2, 3, 4]; rank q * 3 with linear interpolation:
    # q = 0 -> thr 1 (all cells); q = 0.5 -> thr 2.5 (TR, BR);
    # q = 0.99 -> thr 3.97 (TR). One level per image, as the official code
    # takes the diagonal of the (B, B, 1) quantile matrix.
    sal = _block_map()[None].expand(3, 4, 4)
    masks = run_all.reference_masks(sal, 2, torch.tensor([0.0, 0.5, 0.99]))
    assert masks.shape == (3, 1, 4, 4) and masks.dtype == torch.float32
    expected = torch.zeros(3, 1, 4, 4)
    expected[0] = 1
    expected[1, 0, :, 2:] = 1
    expected[2, 0, :2, 2:] = 1
    assert torch.equal(masks, expected)


def test_reference_mix_by_hand():
    # One row of 4 pixels, lam = 1/4; m0 = [1, 1, 0, 0], m1 = [1, 0, 1, 0],
    # partner of 0 is 1 and of 1 is 0: agree | own | partner | agree.
    x0 = torch.tensor([4., 8., 12., 16.])
    x1 = torch.tensor([0., 4., 8., 40.])
    x = torch.stack([x0, x1])[:, None, None].expand(2, 1, 4, 4).contiguous()
    m = torch.tensor([[1., 1., 0., 0.], [1., 0., 1., 0.]])
    m = m[:, None, None].expand(2, 1, 4, 4).contiguous()
    targets = torch.tensor([[1., 0.], [0., 1.]])
    lam = torch.tensor(0.25)
    mixed, mixed_t = run_all.reference_mix(x, targets, m, torch.tensor([1, 0]),
                                           lam, 1 - lam)
    row = torch.tensor([[1., 8., 8., 34.], [3., 8., 8., 22.]])
    torch.testing.assert_close(mixed[:, 0, 0], row)
    # t0 = .5 * (.25 t0 + .75 t1) + .25 t0 + .25 t1 = [.375, .625]
    torch.testing.assert_close(mixed_t,
                               torch.tensor([[.375, .625], [.625, .375]]))


def test_cpu_peak_memory_is_the_running_maximum():
    n = 256 * 1024  # 1 MiB of float32

    def one():
        return torch.ones(n)

    def sequential():  # two blocks, never alive together
        a = torch.ones(n)
        del a
        return torch.ones(n)

    def together():
        a, b = torch.ones(n), torch.ones(n)
        return a + b  # three blocks alive at the end

    mib = 4 * n
    for fn, blocks in ((one, 1), (sequential, 1), (together, 3)):
        peak, how = _common.peak_memory(fn, 'cpu')
        assert 'profiler' in how
        assert blocks * mib <= peak < blocks * mib + 4096, fn.__name__


def test_interleave_alternates_and_counts():
    calls = []
    tasks = {
        name: (lambda i, name=name: (lambda: calls.append((i, name))))
        for name in 'ab'
    }
    times = _common.interleave(tasks,
                               rounds=3,
                               device='cpu',
                               warmup=1,
                               collect=False)
    assert [len(v) for v in times.values()] == [3, 3]
    assert calls == [(0, 'a'), (0, 'b'), (1, 'b'), (1, 'a'), (2, 'a'),
                     (2, 'b'), (3, 'b'), (3, 'a')]


def test_full_runs_need_31_timings():
    with pytest.raises(SystemExit):
        run_all.parse_args(['--runs', '30'])
    assert run_all.parse_args(['--runs', '31']).runs == 31
    assert run_all.parse_args(['--quick']).runs == 3


@pytest.mark.slow
def test_run_all_quick_writes_json_and_png(tmp_path):
    proc = subprocess.run([
        sys.executable,
        osp.join(BENCH, 'run_all.py'), '--quick', '--device', 'cpu',
        '--out-dir',
        str(tmp_path)
    ],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert '| what | ratio | goal |' in proc.stdout
    report = json.loads((tmp_path / 'run_all.json').read_text())
    assert {'meta', 'cls', 'det_seg', 'kernels', 'summary'} <= set(report)
    assert report['meta']['quick'] is True
    assert report['meta']['device'] == 'cpu'

    cls = report['cls']['results']
    methods = ('cutmix', 'cutmix (control)', 'rmix', 'rlmix', 'recursivemix')
    for name in methods:
        assert len(cls[name]['times']) == 2  # --quick: 2 timed steps
        assert cls[name]['ratio'] == pytest.approx(cls[name]['median_s'] /
                                                   cls['cutmix']['median_s'])
    assert cls['cutmix']['ratio'] == 1.0
    ppo = cls['ppo_update']
    assert cls['rlmix_amortised']['median_s'] == pytest.approx(
        cls['rlmix']['median_s'] + ppo['median_s'] / ppo['n_steps'])

    det_seg = report['det_seg']['results']
    assert set(det_seg) == {'det', 'seg'}
    for r in det_seg.values():
        m = r['median_s']
        assert r['step_rm_over_step'] == pytest.approx(m['step+rm'] /
                                                       m['step'])

    rows = report['kernels']['results']
    assert {(r['op'], r['grid'])
            for r in rows} == {(op, g)
                               for op in ('mask', 'mask+mix')
                               for g in run_all.GRIDS}
    b, s = 32, 32  # --quick sizes
    for r in rows:
        assert (r['batch'], r['size']) == (b, s)
        assert r['speedup'] == pytest.approx(r['ref']['median_s'] /
                                             r['ours']['median_s'])
        assert r['goal'] == (5.0 if r['op'] == 'mask' else 2.0)
        for side in ('ref', 'ours'):
            assert len(r[side]['times']) == 3
            assert r[side]['images_per_s'] == pytest.approx(
                b / r[side]['median_s'])
            assert math.isfinite(r[side]['images_per_s'])
        # the peak includes the result: bool masks (ours), float32 masks
        # (reference), float32 mixed images (both)
        if r['op'] == 'mask':
            assert r['ours']['peak_bytes'] >= b * s * s
            assert r['ref']['peak_bytes'] >= 4 * b * s * s
        else:
            assert r['ours']['peak_bytes'] >= 4 * 3 * b * s * s
            assert r['ref']['peak_bytes'] >= 4 * 3 * b * s * s
    assert len(report['summary']) == 4 + 4 + len(rows)

    png = (tmp_path / 'run_all.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10000
