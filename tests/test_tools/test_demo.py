"""End-to-end test of ``tools/demo.py`` (slow: trains through the Runner)."""
import os.path as osp
import re
import subprocess
import sys

import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_demo_trains_and_prints_the_table(tmp_path):
    out_dir, data_root = tmp_path / 'out', tmp_path / 'digits'
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'demo.py'), '--epochs', '2', '--methods',
        'baseline', 'rm', '--out-dir',
        str(out_dir), '--data-root',
        str(data_root)
    ]
    proc = subprocess.run(cmd,
                          cwd=str(tmp_path),
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert ('| method | top-1 (%) | ECE (%) | corruption acc. (%) | '
            'seconds/iter |') in out
    rows = {
        m: tuple(map(float, v))
        for m, *v in re.findall(
            r'^\| (baseline|rm) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|',
            out, re.M)
    }
    assert set(rows) == {'baseline', 'rm'}
    # two epochs are far above chance (10%); measured 94% and 75%
    assert rows['baseline'][0] > 80.0
    assert rows['rm'][0] > 30.0
    for top1, ece, corruption in rows.values():
        # ECE in percent; corruptions lower the accuracy on average
        assert 0.0 <= ece < 100.0
        assert 0.0 < corruption < top1
    # 2 x 47 iterations of batch 32 over the 1497 training images
    assert re.search(r'^\| baseline \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| '
                     r'[0-9.]+ \| 94 \|', out, re.M)
    assert 'benchmarks/results/reproduce_digits.md' in out
    # only the last checkpoint is written
    assert sorted(p.name for p in (out_dir / 'baseline').glob('*.pth')) == [
        'epoch_2.pth'
    ]
    with Image.open(out_dir / 'kernels.png') as img:
        assert img.width > 800 and img.height > 800
    table = (out_dir / 'results.md').read_text()
    assert table.splitlines()[2].startswith('| baseline | ')
    assert (data_root / 'digits.json').is_file()
    assert 'RecursiveMix step 3' in out
