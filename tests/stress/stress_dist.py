"""Stress the distributed launchers: N 2-process CPU (gloo) runs each of
``tools/dist_train.sh``, ``tools/dist_test.sh`` and ``tools/slurm_train.sh``
(with the ``srun`` / ``scontrol`` stand-ins of
``tests/test_docs/test_docs_commands.py``) on a tiny classifier, counting the
runs that exit non-zero (issue 14, part 1).

Not collected by ``pytest tests`` (the file name does not match
``test_*.py``). Run it from the repository root::

    .venv/bin/python tests/stress/stress_dist.py -n 50 \
        [--only slurm,train,test]

Every failure's last output lines are written to ``--log-dir``
(default ``work_dirs/stress``); the summary line per launcher is
``<launcher>: <failures> of <runs> runs exited non-zero``.
"""
import argparse
import os
import os.path as osp
import socket
import subprocess
import sys
import time

import numpy as np

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)
TINY_CLS = osp.join(REPO, 'tests', 'test_tools', 'configs',
                    'tiny_resnet_custom.py')

CONFIG = """_base_ = [{base!r}]
data_root = {root!r}
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)),
    train_cfg=dict(augments=[dict(type='RecursiveMix')]))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2, save_best=None))
custom_hooks = [dict(type='ExactResumeHook')]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _write_pngs(root: str) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 2)):
        for cls in ('cat', 'dog'):
            d = osp.join(root, split, cls)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(img).save(osp.join(d, f'{i}.png'))


def _shims(root: str) -> str:
    sys.path.insert(0, osp.join(REPO, 'tests', 'test_docs'))
    from test_docs_commands import SCONTROL, SRUN  # noqa: E402
    shims = osp.join(root, 'shims')
    os.makedirs(shims, exist_ok=True)
    for name, text in (('srun', SRUN.format(python=sys.executable)),
                       ('scontrol', SCONTROL)):
        path = osp.join(shims, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, 0o755)
    return shims


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-n', type=int, default=50, help='runs per launcher')
    parser.add_argument('--only', default='train,test,slurm')
    parser.add_argument('--root', default=osp.join(REPO, 'work_dirs',
                                                   'stress'))
    parser.add_argument('--stop-on-failure', action='store_true')
    args = parser.parse_args()
    root = osp.abspath(args.root)
    data = osp.join(root, 'data')
    _write_pngs(data)
    config = osp.join(root, 'stress_cfg.py')
    with open(config, 'w') as f:
        f.write(CONFIG.format(base=TINY_CLS, root=data))
    shims = _shims(root)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1', PYTHONFAULTHANDLER='1',
               PATH=shims + os.pathsep + os.environ['PATH'])
    python = sys.executable

    # one checkpoint for dist_test
    ckpt_dir = osp.join(root, 'ckpt')
    if not osp.isfile(osp.join(ckpt_dir, 'iter_2.pth')):
        subprocess.run([python, osp.join(REPO, 'tools', 'train.py'), config,
                        '--work-dir', ckpt_dir], check=True, env=env,
                       capture_output=True)
    ckpt = osp.join(ckpt_dir, 'iter_2.pth')

    def cmd(kind: str, i: int):
        wd = osp.join(root, 'runs', f'{kind}_{i}')
        if kind == 'train':
            return ['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
                    wd]
        if kind == 'test':
            return ['bash', 'tools/dist_test.sh', config, ckpt, '2',
                    '--work-dir', wd]
        return ['bash', 'tools/slurm_train.sh', 'p', 'j', config, wd]

    kinds = args.only.split(',')
    failures = dict.fromkeys(kinds, 0)
    runs = dict.fromkeys(kinds, 0)
    # interleaved (slurm, train, test, slurm, ...): an interrupted stress run
    # still has comparable counts for every launcher
    for i in range(args.n):
        for kind in kinds:
            port = str(_free_port())
            run_env = dict(env, PORT=port, MASTER_PORT=port, GPUS='2',
                           GPUS_PER_NODE='2')
            t0 = time.time()
            proc = subprocess.run(cmd(kind, i), cwd=REPO, env=run_env,
                                  capture_output=True, text=True,
                                  timeout=600)
            dt = time.time() - t0
            runs[kind] += 1
            ok = proc.returncode == 0 and 'gloo threads' not in proc.stderr
            if not ok:
                failures[kind] += 1
                log = osp.join(root, f'fail_{kind}_{i}.log')
                with open(log, 'w') as f:
                    f.write(proc.stdout + '\n----- stderr\n' + proc.stderr)
            print(f'{kind} {i + 1}/{args.n}: rc={proc.returncode} '
                  f'{dt:.1f}s; so far {failures[kind]} of {runs[kind]} '
                  'failed', flush=True)
            if not ok and args.stop_on_failure:
                return 1
    for kind in kinds:
        print(f'{kind}: {failures[kind]} of {runs[kind]} runs exited non-zero',
              flush=True)
    return int(any(failures.values()))


if __name__ == '__main__':
    sys.exit(main())
