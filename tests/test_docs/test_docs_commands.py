r"""The documentation is checked (issue 6: "Every command in the docs is run by
a test ... so that none rots"): every command it shows runs, every relative
link resolves, every config is in the model zoo with its published number,
and every config snippet of ``docs/add_to_your_config.md`` builds.

Pages: ``README.md`` and ``docs/*.md``.

Commands
--------
A command is a logical line (``\`` continuations joined) of a ```` ```bash ````
block that is neither empty nor a comment. Config snippets and diffs live in
```` ```python ```` / ```` ```diff ```` blocks and file trees in
```` ```text ```` blocks; every fence must name one of
:data:`FENCE_LANGUAGES`.

Each page's commands run in their order, for real, with ``bash -c`` in a
fresh workspace laid out like a clone: ``tools/`` (a copy), ``data/``
(generated once, shared by the pages) and ``configs/<task>/<name>.py`` for
every config a command names. The commands of one block that set
``NODE_RANK`` run at the same time (one per "machine"). A command passes when
it exits with status 0. The only commands not run are those of
:data:`ALLOWED`, each with its reason and, where another check runs it, the
file that shows so.

Rewrites (the only differences from what a user runs)
-----------------------------------------------------
1. Interpreter: ``.venv/bin/python`` (and a leading ``python``) become the
   interpreter running the tests.
2. Processes: the GPU count of ``tools/dist_train.sh`` / ``dist_test.sh``
   becomes 2 (1 per machine when ``NNODES`` is 2); ``GPUS`` of the Slurm
   scripts becomes 2 and ``GPUS_PER_NODE`` keeps the number of nodes.
   ``MASTER_ADDR`` becomes 127.0.0.1; ``PORT`` and ``MASTER_PORT`` a free
   port. The processes run on the CPU with gloo (``tools/train.py`` and
   ``tools/test.py`` set that up themselves when CUDA is unavailable).
3. Slurm: ``srun`` and ``scontrol`` are not installed, so stand-ins on
   ``PATH`` play the scheduler: ``srun`` starts ``--ntasks`` copies of its
   command with ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
   ``SLURM_NODEID`` and ``SLURM_NODELIST=localhost`` and fails when one copy
   fails; ``scontrol show hostname`` prints ``localhost``. Only the scheduler
   is faked.
4. Downloads: ``wget -P DIR URL`` writes ``DIR/<file name>`` in the layout
   of the published file (the official container and key names, random
   weights: :data:`FAKE_FILES`) instead of downloading it; a file that a page
   tells the user to download by hand is written the same way before the
   first command that names it.
5. Configs: ``configs/<task>/<name>.py`` of the workspace inherits the
   repository's config (``_base_``) and only shrinks the run
   (:func:`shrink_config`): batch 2, no data-loader workers, 8 training
   images, one epoch or 2 iterations, small COCO / ADE20K images (128 x 96,
   crops of 64 x 64); pretrained weights that would be downloaded
   (``torchvision://``) are not loaded. Models, optimizers (the AMP recipes
   included: ``tools/train.py`` runs them with bfloat16 autocast on the CPU)
   and augments are the configs' own. The configs' relative data roots (``data/...``) hold
   generated data in the real formats: CIFAR and ImageNet
   (:mod:`mixplugins.datasets.fake_classification`), COCO and ADE20K
   (:mod:`mixplugins.datasets.synthetic`; the annotation files list COCO's
   80 category names, the shapes being the first three, so that the stock
   80-class metainfo and ``CocoMetric`` accept them)
   and scikit-learn's digits (``prepare_digits``).
6. CIFAR md5: the generated CIFAR files cannot match the md5 sums of the
   real release, which mmpretrain checks before reading; a
   ``sitecustomize`` module on ``PYTHONPATH`` makes
   ``mmpretrain.datasets.cifar.check_md5`` accept them once that module is
   imported (``test_configs_e2e.py`` patches the same function in-process).
"""
import collections
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest
import yaml

from tests._helpers import (DET_PIPELINES, SEG_PIPELINES, free_port,
                            tool_env)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAGES = ['README.md'] + sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'docs', '*.md')))
FENCE_LANGUAGES = ('bash', 'python', 'diff', 'text', 'yaml', 'json')
TASKS = ('classification', 'detection', 'segmentation')
#: Seconds one command may take.
COMMAND_TIMEOUT = 600


# ------------------------------------------------------------------ parsing
class Block(NamedTuple):
    lang: str
    line: int  # 1-based line of the first line inside the fence
    lines: List[str]


class Command(NamedTuple):
    page: str
    line: int
    block: int  # index of the bash block in the page
    text: str


def read(page: str) -> str:
    with open(osp.join(REPO, page), encoding='utf-8') as f:
        return f.read()


def code_blocks(text: str) -> List[Block]:
    """Fenced blocks, in order; an unclosed fence is an error."""
    blocks, lang, start, lines = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        fence = re.match(r'^\s*```(.*)$', line)
        if lang is None and fence:
            lang, start, lines = fence.group(1).strip(), i + 1, []
        elif lang is not None and re.match(r'^\s*```\s*$', line):
            blocks.append(Block(lang, start, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f'unclosed ``` fence opened at line {start - 1}'
    return blocks


def page_commands(page: str) -> List[Command]:
    """The commands of a page's bash blocks."""
    out = []
    bash = [b for b in code_blocks(read(page)) if b.lang == 'bash']
    for index, block in enumerate(bash):
        pending, first = '', None
        for offset, raw in enumerate(block.lines):
            line = raw.strip()
            if not pending and (not line or line.startswith('#')):
                continue
            if first is None:
                first = block.line + offset
            if line.endswith('\\'):
                pending += line[:-1] + ' '
                continue
            out.append(Command(page, first, index, pending + line))
            pending, first = '', None
        assert not pending, f'{page}:{first}: dangling "\\" continuation'
    return out


# --------------------------------------------------------------- allow-list
class Allowed(NamedTuple):
    pattern: str
    reason: str
    #: (file, text): where another check runs the command, or None.
    evidence: Optional[Tuple[str, str]]


ALLOWED = [
    Allowed(
        r'bash tools/install\.sh && \.venv/bin/python -m pytest tests',
        'CI itself: .ci/run is exactly this line', ('.ci/run',
                                                    'bash tools/install.sh && '
                                                    '.venv/bin/python -m '
                                                    'pytest tests')),
    Allowed(
        r'(PROFILE=classification )?bash tools/install\.sh && '
        r'\.venv/bin/python tools/demo\.py',
        'install: the full profile is run by CI (.ci/run), the '
        'classification profile (a subset of it: mmcv-lite instead of mmcv) '
        'by hand (docs/install.md); tools/demo.py: run by '
        'tests/test_tools/test_demo.py (2 epochs, 2 methods; all 4 methods '
        'for 5 epochs take minutes)',
        ('tests/test_tools/test_demo.py', "'demo.py'")),
    Allowed(r'bash tools/install\.sh',
            'run by CI first (.ci/run); a test must not reinstall the '
            'environment it runs in', ('.ci/run', 'bash tools/install.sh')),
    Allowed(r'STACK=onedl bash tools/install\.sh && '
            r'\.venv-onedl/bin/python -m pytest tests',
            'builds the onedl stack into .venv-onedl (onedl-mmcv: ~22 min '
            'on 2 cores) and runs the suite there; CI (.ci/run) runs the '
            'install and the named subset of docs/install.md',
            ('.ci/run', 'STACK=onedl bash tools/install.sh && '
             '.venv-onedl/bin/python -m pytest')),
    Allowed(r'python3 -m venv \.venv-onedl && .* STACK=onedl '
            r'bash tools/install\.sh',
            'GPU install of the forks\' prebuilt onedl-mmcv: needs a GPU '
            'machine and the internet (PyTorch and onedl indexes)', None),
    Allowed(r'pip install -e "\.\[mm,rl\]"',
            'installs into an existing environment: a test must not change '
            'the environment it runs in', None),
    Allowed(r'FORCE_CUDA=1 .*bash tools/install\.sh',
            'builds mmcv with CUDA ops: needs a GPU machine with nvcc; the '
            'machines of this repository have no GPU', None),
]


def allowed(command: str) -> Optional[Allowed]:
    for entry in ALLOWED:
        if re.fullmatch(entry.pattern, command):
            return entry
    return None


# ------------------------------------------------------------------- fakes
def _fake_recursivemix_r50(path: str) -> None:
    """implus/RecursiveMix main.py: dict(epoch, state_dict, optimizer) of a
    DDP torchvision ResNet-50 plus fc_roi."""
    from tests.test_tools.test_convert_checkpoint import (
        _official_resnet50, _recursivemix_resnet50_ckpt)
    _recursivemix_resnet50_ckpt(_official_resnet50(), path)


def _fake_rmix_preactresnet18(path: str) -> None:
    """R-Mix's published CIFAR-100 file as its README reads it:
    'state_dict' with DDP's module. keys."""
    from tests.test_tools.test_convert_checkpoint import (OFFICIAL_CIFAR,
                                                          _randomize,
                                                          _save_cifar)
    _save_cifar(_randomize(OFFICIAL_CIFAR['preactresnet18'](100)), 'readme',
                path)


def _fake_mm_model(config: str, meta: dict) -> Callable[[str], None]:
    """A whole detector / segmentor as mmdet 2.x / mmseg 0.x save it:
    dict(meta, state_dict, optimizer). The keys are those of the model the
    config builds with mmdet 3.3.0 / mmseg 1.2.2, whose model zoos serve
    the 2.x / 0.x files of the same models."""

    def make(path: str) -> None:
        import torch
        from mmengine.config import Config
        from mmengine.registry import DefaultScope

        cfg = Config.fromfile(osp.join(REPO, config))
        scope = cfg.default_scope
        if scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(cfg.model)
        torch.save(
            dict(meta=dict(meta),
                 state_dict=model.state_dict(),
                 optimizer=dict(state={}, param_groups=[])), path)

    return make


#: File name -> writer of a stand-in in the published layout.
FAKE_FILES: Dict[str, Callable[[str], None]] = {
    'checkpoint_imagenet_300epoch_r50_rm_79.20_top1_acc.pth':
    _fake_recursivemix_r50,
    'preactresnet18_rmix.pth.tar':
    _fake_rmix_preactresnet18,
    'checkpoint_coco_12epoch_atss_r50_fpn_rm_41.5_ap.pth':
    _fake_mm_model('configs/detection/atss_r50-rm_fpn_1x_coco.py',
                   dict(mmdet_version='2.19.1+83dd7bd', epoch=12,
                        iter=87960)),
    'checkpoint_ade20k_80k_upernet_r50_rm_42.30_miou.pth':
    _fake_mm_model('configs/segmentation/upernet_r50-rm_512x512_80k_ade20k.py',
                   dict(mmseg_version='0.20.2+83dd7bd', iter=80000)),
}
WGET = re.compile(r'wget -P (\S+) (https?://\S+)')
CONFIG_PATH = re.compile(r'configs/(?:%s)/[\w.-]+\.py' % '|'.join(TASKS))


# ---------------------------------------------------------------- rewrites
class Plan(NamedTuple):
    command: Command
    #: bash text to run, or None for a download handled by the check
    shell: Optional[str]
    #: files to write first: (path relative to the workspace, writer)
    fakes: List[Tuple[str, Callable[[str], None]]]
    configs: List[str]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _processes(match: re.Match, per_machine: int) -> str:
    return match.group(1) + str(per_machine)


def rewrite(command: Command) -> Plan:
    """What the check runs for ``command`` (see the module docstring)."""
    text = command.text
    configs = sorted(set(CONFIG_PATH.findall(text)))
    for config in configs:
        assert osp.isfile(osp.join(REPO, config)), \
            f'{command.page}:{command.line}: no such config {config}'
    fakes = [(osp.join('checkpoints', name), FAKE_FILES[name])
             for name in FAKE_FILES
             if f'checkpoints/{name}' in text and not WGET.fullmatch(text)]
    download = WGET.fullmatch(text)
    if download:
        name = download.group(2).rsplit('/', 1)[1]
        assert name in FAKE_FILES, \
            f'{command.page}:{command.line}: no stand-in for {name}'
        return Plan(command, None,
                    [(osp.join(download.group(1), name), FAKE_FILES[name])],
                    [])
    python = _quote(sys.executable)
    text = re.sub(r'(^|\s|=)\.venv/bin/python(?=\s|$)',
                  lambda m: m.group(1) + python, text)
    text = re.sub(r'^((?:\w+=\S*\s+)*)python(?=\s)',
                  lambda m: m.group(1) + python, text)
    nodes = re.search(r'\bNNODES=(\d+)', text)
    per_machine = 1 if nodes and int(nodes.group(1)) > 1 else 2
    text = re.sub(r'(tools/dist_train\.sh\s+\S+\s+)\d+',
                  lambda m: _processes(m, per_machine), text)
    text = re.sub(r'(tools/dist_test\.sh\s+\S+\s+(?:"[^"]*"|\S+)\s+)\d+',
                  lambda m: _processes(m, per_machine), text)
    gpus = re.search(r'\bGPUS=(\d+)', text)
    if gpus:
        per_node = re.search(r'\bGPUS_PER_NODE=(\d+)', text)
        num_nodes = max(1, int(gpus.group(1)) //
                        int(per_node.group(1) if per_node else 8))
        text = re.sub(r'\bGPUS=\d+', 'GPUS=2', text)
        tasks_per_node = f'GPUS_PER_NODE={max(1, 2 // num_nodes)}'
        if per_node:
            text = re.sub(r'\bGPUS_PER_NODE=\d+', tasks_per_node, text)
        else:
            text = tasks_per_node + ' ' + text
    text = re.sub(r'\bMASTER_ADDR=\S+', 'MASTER_ADDR=127.0.0.1', text)
    text = re.sub(r'\bPORT=\d+', 'PORT=$DOCS_PORT', text)
    return Plan(command, text, fakes, configs)


# ----------------------------------------------------- shrunk configs (5.)
CLS_SHRINK = '''
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict({train}))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict({val}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
'''
DET_SHRINK = DET_PIPELINES + '''train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
'''
SEG_SHRINK = SEG_PIPELINES + '''
model = dict(data_preprocessor=dict(size=crop_size){backbone})
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
'''
#: Images read per split from datasets that are larger than the run.
TRAIN_IMAGES, VAL_IMAGES = 8, 2


def shrink_config(config: str) -> str:
    """The workspace's version of ``config`` (rewrite 5.)."""
    from mmengine.config import Config

    source = osp.join(REPO, config)
    cfg = Config.fromfile(source, import_custom_modules=False)
    task = config.split('/')[1]
    text = f'_base_ = [{source!r}]\n'
    if task == 'classification':
        subset = ('ImageNet', 'CustomDataset')
        train = (f'indices={TRAIN_IMAGES}' if
                 cfg.train_dataloader.dataset.type in subset else '')
        val = (f'indices={VAL_IMAGES}'
               if cfg.val_dataloader.dataset.type in subset else '')
        text += CLS_SHRINK.format(train=train, val=val)
    init = cfg.model.get('backbone', {}).get('init_cfg') or {}
    no_download = str(init.get('checkpoint', '')).startswith('torchvision://')
    if task == 'segmentation':
        text += SEG_SHRINK.format(
            backbone=', backbone=dict(init_cfg=None)' if no_download else '')
    else:
        if task == 'detection':
            text += DET_SHRINK
        if no_download:
            text += 'model = dict(backbone=dict(init_cfg=None))\n'
    return text


# ------------------------------------------------------ workspace helpers
SITECUSTOMIZE = '''\
"""Test-only (tests/test_docs/test_docs_commands.py, rewrite 6): accept the
generated CIFAR files whose md5 cannot match the real release."""
import sys


class _AcceptGeneratedCifar:

    def find_spec(self, name, path=None, target=None):
        if name != 'mmpretrain.datasets.cifar':
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            module.check_md5 = lambda *args, **kwargs: True

        spec.loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _AcceptGeneratedCifar())
'''
SRUN = '''\
#!{python}
"""Stand-in for Slurm's srun (tests/test_docs/test_docs_commands.py)."""
import os
import subprocess
import sys
import time

args, opts = sys.argv[1:], {{}}
while args and args[0].startswith('-'):
    opt = args.pop(0)
    if '=' in opt:
        key, value = opt.split('=', 1)
    elif opt in ('-p', '-J', '-N', '-n', '-c', '-w', '-t'):
        key, value = opt, args.pop(0)
    else:
        key, value = opt, ''
    opts[key] = value
assert args, 'srun: no command'
ntasks = int(opts.get('--ntasks', opts.get('-n', 1)))
per_node = int(opts.get('--ntasks-per-node', ntasks))
procs = []
for rank in range(ntasks):
    env = dict(os.environ,
               SLURM_PROCID=str(rank),
               SLURM_NTASKS=str(ntasks),
               SLURM_LOCALID=str(rank % per_node),
               SLURM_NODEID=str(rank // per_node),
               SLURM_NNODES=str(-(-ntasks // per_node)),
               SLURM_NODELIST='localhost',
               SLURM_JOB_NAME=opts.get('--job-name', ''))
    procs.append(subprocess.Popen(args, env=env))
while any(p.poll() is None for p in procs):
    if any(p.poll() not in (None, 0) for p in procs):
        for p in procs:
            if p.poll() is None:
                p.terminate()
    time.sleep(0.2)
for rank, p in enumerate(procs):
    if p.returncode:
        print(f'srun: task {{rank}} exited with {{p.returncode}}',
              file=sys.stderr)
sys.exit(max(abs(p.returncode) for p in procs))
'''
SCONTROL = '''\
#!/usr/bin/env bash
# Stand-in for Slurm's scontrol: `scontrol show hostname NODELIST`.
echo localhost
'''


def _write(path: str, text: str, mode: Optional[int] = None) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)


def _use_coco_categories(data_root: str) -> None:
    """Give the generated annotations COCO's 80 category names, the shapes
    being the first three (person, bicycle, car), so that the stock 80-class
    metainfo and ``CocoMetric`` accept the data and any predicted label."""
    from mmdet.datasets import CocoDataset
    names = CocoDataset.METAINFO['classes']
    for split in ('train', 'val'):
        path = osp.join(data_root, 'annotations',
                        f'instances_{split}2017.json')
        with open(path) as f:
            coco = json.load(f)
        assert [c['id'] for c in coco['categories']] == [1, 2, 3]
        coco['categories'] = [
            dict(id=i + 1, name=name, supercategory='thing')
            for i, name in enumerate(names)
        ]
        with open(path, 'w') as f:
            json.dump(coco, f)


def make_docs_data(root: str) -> str:
    """Write the ``data/`` folder of the workspaces into ``root``
    (rewrite 5.)."""
    from mixplugins.datasets import (prepare_digits, write_cifar,
                                     write_imagenet)
    from mixplugins.datasets.synthetic import (make_ade20k_shapes,
                                               make_coco_shapes)
    split = dict(train=TRAIN_IMAGES, test=VAL_IMAGES)
    write_cifar(osp.join(root, 'cifar100'), 'cifar100', split)
    write_cifar(osp.join(root, 'cifar10'), 'cifar10', split)
    # mmpretrain's ImageNet needs the 1000 class folders
    write_imagenet(osp.join(root, 'imagenet'), 1000, 1, (40, 52))
    make_coco_shapes(osp.join(root, 'coco'), TRAIN_IMAGES, VAL_IMAGES,
                     sizes=((64, 80), ))
    _use_coco_categories(osp.join(root, 'coco'))
    make_ade20k_shapes(osp.join(root, 'ade', 'ADEChallengeData2016'),
                       TRAIN_IMAGES, VAL_IMAGES)
    prepare_digits(osp.join(root, 'digits'))
    return root


@pytest.fixture(scope='module')
def docs_data(tmp_path_factory) -> str:
    return make_docs_data(str(tmp_path_factory.mktemp('docs_data')))


def _workspace(tmp_path, data_root: str) -> Tuple[str, Dict[str, str]]:
    """A clone-like folder to run a page's commands in, and their env."""
    ws = str(tmp_path / 'ws')
    shutil.copytree(osp.join(REPO, 'tools'), osp.join(ws, 'tools'))
    os.symlink(data_root, osp.join(ws, 'data'))
    shims = str(tmp_path / 'shims')
    _write(osp.join(shims, 'srun'), SRUN.format(python=sys.executable),
           0o755)
    _write(osp.join(shims, 'scontrol'), SCONTROL, 0o755)
    site = str(tmp_path / 'site')
    _write(osp.join(site, 'sitecustomize.py'), SITECUSTOMIZE)
    env = tool_env(site,
                   PATH=shims + os.pathsep + os.environ['PATH'],
                   MPLBACKEND='Agg')
    return ws, env


def _start(plan: Plan, ws: str, env: dict, port: int) -> subprocess.Popen:
    distributed = re.search(r'dist_\w+\.sh|slurm_\w+\.sh|NNODES=',
                            plan.shell)
    threads = '1' if distributed else '2'
    env = dict(env,
               DOCS_PORT=str(port),
               PORT=str(port),
               MASTER_PORT=str(port),
               OMP_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads)
    return subprocess.Popen(['bash', '-c', plan.shell],
                            cwd=ws,
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True)


def _groups(plans: List[Plan]) -> List[List[Plan]]:
    """Consecutive commands of one block that set NODE_RANK run together."""
    groups: List[List[Plan]] = []
    for plan in plans:
        prev = groups[-1][-1] if groups else None
        if (prev is not None and plan.shell and prev.shell
                and 'NODE_RANK=' in plan.shell and 'NODE_RANK=' in prev.shell
                and plan.command.block == prev.command.block):
            groups[-1].append(plan)
        else:
            groups.append([plan])
    return groups


def plan_page(page: str) -> List[Plan]:
    return [rewrite(c) for c in page_commands(page) if not allowed(c.text)]


def run_page(page: str, ws: str, env: dict,
             verbose: bool = False) -> List[str]:
    """Run the page's commands in ``ws``; return one line per command
    (with its output if ``verbose``)."""
    report = []
    for group in _groups(plan_page(page)):
        for plan in group:
            for rel, make in plan.fakes:
                path = osp.join(ws, rel)
                if not osp.exists(path):
                    os.makedirs(osp.dirname(path), exist_ok=True)
                    make(path)
            for config in plan.configs:
                path = osp.join(ws, config)
                if not osp.exists(path):
                    _write(path, shrink_config(config))
        runnable = [p for p in group if p.shell is not None]
        if not runnable:
            report.append(f'{group[0].command.line}: written by the check')
            continue
        port = free_port()
        start = time.time()
        procs = [_start(p, ws, env, port) for p in runnable]
        outs = []
        for plan, proc in zip(runnable, procs):
            try:
                out, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                out = proc.communicate()[0] + '\n[timed out]'
            outs.append(out)
        for plan, proc, out in zip(runnable, procs, outs):
            assert proc.returncode == 0, (
                f'{page}:{plan.command.line} failed (exit '
                f'{proc.returncode})\n  documented: {plan.command.text}\n'
                f'  ran: {plan.shell}\n{out[-6000:]}')
        report.append(f'{runnable[0].command.line}: {time.time() - start:.0f}'
                      f' s: {runnable[0].command.text[:90]}')
        if verbose:
            report.extend(outs)
    return report


# ------------------------------------------------------------ fast checks
def test_fences_name_a_language():
    for page in PAGES:
        for block in code_blocks(read(page)):
            assert block.lang in FENCE_LANGUAGES, (
                f'{page}:{block.line - 1}: fence language {block.lang!r}; '
                f'use one of {FENCE_LANGUAGES} (commands go in bash blocks)')


def test_every_command_is_run_or_allowed_with_a_reason():
    """Every command either goes through the rewrites (all configs it names
    exist, every download has a stand-in) or is allow-listed; every
    allow-list entry is used and its evidence holds."""
    commands = [c for page in PAGES for c in page_commands(page)]
    assert commands
    used = collections.Counter()
    for command in commands:
        entry = allowed(command.text)
        if entry is not None:
            used[entry.pattern] += 1
            continue
        plan = rewrite(command)
        if plan.shell is not None:
            rest = plan.shell.replace(_quote(sys.executable), '')
            assert '.venv/bin/python' not in rest, plan.shell
            assert not re.search(r'dist_(train|test)\.sh .* [3-9]\b',
                                 plan.shell.split(' --')[0]), plan.shell
    for entry in ALLOWED:
        assert used[entry.pattern], f'unused allow-list entry {entry.pattern}'
        assert entry.reason
        if entry.evidence is not None:
            path, text = entry.evidence
            assert text in read(path), f'{path} does not contain {text!r}'
    # the allow-list stays small: commands are run, not excused (7: the
    # two installs of the onedl stack, CPU and GPU, joined the five)
    assert sum(used.values()) <= 7


def test_rewrites():
    """The rewrites of the module docstring, on made-up commands."""
    def shell(text):
        return rewrite(Command('x.md', 1, 0, text)).shell

    py = _quote(sys.executable)
    assert shell('.venv/bin/python tools/train.py configs/classification/'
                 'r50_in1k.py') == (f'{py} tools/train.py configs/'
                                    'classification/r50_in1k.py')
    assert shell('PYTHON=.venv/bin/python bash tools/dist_train.sh '
                 'configs/classification/r50_in1k.py 8 --amp') == (
                     f'PYTHON={py} bash tools/dist_train.sh '
                     'configs/classification/r50_in1k.py 2 --amp')
    assert shell('NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 bash '
                 'tools/dist_train.sh configs/classification/r50_in1k.py 8'
                 ) == ('NNODES=2 NODE_RANK=1 MASTER_ADDR=127.0.0.1 '
                       'PORT=$DOCS_PORT bash tools/dist_train.sh '
                       'configs/classification/r50_in1k.py 1')
    assert shell('bash tools/dist_test.sh configs/classification/r50_in1k.py'
                 ' "$(cat w/last_checkpoint)" 8') == (
                     'bash tools/dist_test.sh configs/classification/'
                     'r50_in1k.py "$(cat w/last_checkpoint)" 2')
    assert shell('GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh p j '
                 'configs/classification/r50_in1k.py w') == (
                     'GPUS=2 GPUS_PER_NODE=1 bash tools/slurm_train.sh p j '
                     'configs/classification/r50_in1k.py w')
    assert shell('GPUS=8 bash tools/slurm_train.sh p j '
                 'configs/classification/r50_in1k.py w').startswith(
                     'GPUS_PER_NODE=2 GPUS=2 ')
    plan = rewrite(Command('x.md', 1, 0, 'wget -P checkpoints https://x/'
                           'preactresnet18_rmix.pth.tar'))
    assert plan.shell is None
    assert plan.fakes == [('checkpoints/preactresnet18_rmix.pth.tar',
                           FAKE_FILES['preactresnet18_rmix.pth.tar'])]
    with pytest.raises(AssertionError, match='no stand-in'):
        rewrite(Command('x.md', 1, 0, 'wget -P c https://x/unknown.pth'))
    with pytest.raises(AssertionError, match='no such config'):
        rewrite(Command('x.md', 1, 0, 'python tools/train.py '
                        'configs/detection/missing.py'))
    assert allowed('bash tools/install.sh') is not None
    assert allowed('bash tools/install.sh; rm -rf data') is None


def test_relative_links_resolve():
    link = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
    for page in PAGES:
        for target in link.findall(read(page)):
            if re.match(r'[a-z]+:', target) or target.startswith('#'):
                continue
            path = osp.normpath(
                osp.join(REPO, osp.dirname(page), target.split('#')[0]))
            assert osp.exists(path), f'{page}: broken link {target}'


def test_docs_index_links_every_page():
    index = read('docs/README.md')
    for page in PAGES:
        if page.startswith('docs/') and page != 'docs/README.md':
            assert f']({osp.basename(page)})' in index, page


def test_shrunk_configs_shrink_the_run_only(tmp_path):
    """Rewrite 5. on every config: same model (type, backbone, augments)
    and optimizer, smaller run, nothing to download."""
    from mmengine.config import Config
    configs = sorted(
        osp.relpath(p, REPO) for task in TASKS
        for p in glob.glob(osp.join(REPO, 'configs', task, '*.py')))
    for config in configs:
        path = tmp_path / config
        _write(str(path), shrink_config(config))
        orig = Config.fromfile(osp.join(REPO, config),
                               import_custom_modules=False)
        cfg = Config.fromfile(str(path), import_custom_modules=False)
        assert cfg.model.type == orig.model.type, config
        assert cfg.model.backbone.type == orig.model.backbone.type
        assert cfg.model.backbone.get('depth') == \
            orig.model.backbone.get('depth'), config
        assert _augment_names(cfg) == _augment_names(orig), config
        assert cfg.train_dataloader.batch_size == 2, config
        assert cfg.train_dataloader.num_workers == 0, config
        assert cfg.optim_wrapper == orig.optim_wrapper, config
        init = cfg.model.backbone.get('init_cfg') or {}
        assert not str(init.get('checkpoint', '')).startswith('torchvision')
        if cfg.train_cfg.get('max_iters'):
            assert cfg.train_cfg.max_iters == 2, config
        else:
            assert cfg.train_cfg.max_epochs == 1, config
        if config.startswith('configs/segmentation'):
            assert cfg.model.data_preprocessor.size == (64, 64), config
            assert cfg.model.data_preprocessor.type == \
                orig.model.data_preprocessor.type


# --------------------------------------------------------------- model zoo
def _zoo_rows() -> Dict[str, str]:
    """``configs/<task>/<name>.py`` -> the 'expected' cell of its row."""
    rows, expected_col = {}, None
    for line in read('docs/model_zoo.md').splitlines():
        if not line.startswith('|'):
            expected_col = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells[0] == 'config':
            expected_col = next(i for i, c in enumerate(cells)
                                if c.startswith('expected'))
            continue
        target = re.search(r'\]\(\.\./(configs/[^)]+\.py)\)', cells[0])
        if target is None:
            continue
        assert expected_col is not None, line
        assert target.group(1) not in rows, f'listed twice: {target.group(1)}'
        rows[target.group(1)] = cells[expected_col]
    return rows


def _reproduces(config: str) -> Optional[str]:
    """The number of the config header's 'Reproduces:' line."""
    match = re.search(r'^# Reproduces: ([0-9.]+)', read(config), re.M)
    return match.group(1) if match else None


def test_model_zoo_lists_every_config_with_its_published_number():
    rows = _zoo_rows()
    configs = sorted(
        osp.relpath(p, REPO)
        for task in TASKS
        for p in glob.glob(osp.join(REPO, 'configs', task, '*.py')))
    assert len(configs) >= 20
    assert sorted(rows) == configs, (
        f'not listed: {sorted(set(configs) - set(rows))}, '
        f'no such file: {sorted(set(rows) - set(configs))}')

    with open(osp.join(REPO, 'configs', 'classification',
                       'metafile.yml')) as f:
        models = {
            m['Config']: m['Results'][0]['Metrics']
            for m in yaml.safe_load(f)['Models']
        }
    for config, cell in rows.items():
        numbers = re.findall(r'[0-9]+\.[0-9]+', cell)
        if config in models:
            metrics = models[config]
            assert numbers, f'{config}: no number in {cell!r}'
            assert float(numbers[0]) == float(metrics['Top 1 Accuracy']), \
                f'{config}: {cell!r} vs metafile {metrics}'
            top5 = re.search(r'top-5 ([0-9.]+)', cell)
            assert (top5 is None) == ('Top 5 Accuracy' not in metrics)
            if top5:
                assert float(top5.group(1)) == float(
                    metrics['Top 5 Accuracy'])
        elif _reproduces(config) is not None:
            assert numbers and numbers[0] == _reproduces(config), \
                f'{config}: {cell!r} vs header {_reproduces(config)}'
        else:
            # demos and unpublished variants: no number to reproduce
            assert cell == '—' and not config.endswith('_in1k.py'), config
    # every metafile row is a config of the zoo
    assert set(models) <= set(rows)


# ------------------------------------------------------ config snippets
def _snippets() -> List[Tuple[int, str]]:
    return [(b.line, '\n'.join(b.lines) + '\n')
            for b in code_blocks(read('docs/add_to_your_config.md'))
            if b.lang == 'python']


def _augment_names(cfg) -> List[str]:
    model = cfg.model
    if cfg.default_scope == 'mmpretrain':
        augments = model.get('train_cfg', {}).get('augments', [])
    else:
        augments = model.data_preprocessor.get('batch_augments') or []
    return [a['type'] for a in augments]


def test_add_to_your_config_snippets_build(tmp_path):
    """Each python block is a config; its model builds with the augments it
    names (and mmdet / mmseg ones are the lines the stock-tool tests
    train)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from tests.test_tools.test_stock_mm_train import (DET_DIFF,
                                                      DET_README_BASE,
                                                      SEG_CUTMIX_DIFF,
                                                      SEG_DIFF,
                                                      SEG_README_BASE)
    page = read('docs/add_to_your_config.md')
    for base, diff in ((DET_README_BASE, DET_DIFF), (SEG_README_BASE,
                                                     SEG_DIFF),
                       (SEG_README_BASE, SEG_CUTMIX_DIFF)):
        assert f'```python\n{base}\n{diff}```' in page

    snippets = _snippets()
    assert len(snippets) >= 9
    frameworks = collections.Counter()
    for line, text in snippets:
        path = tmp_path / f'snippet_{line}.py'
        path.write_text(text)
        cfg = Config.fromfile(str(path))
        scope = cfg.default_scope
        frameworks[scope] += 1
        if scope == 'mmpretrain':
            from mmpretrain.registry import MODELS
        elif scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(cfg.model)
            names = _augment_names(cfg)
            expected = [MODELS.get(n) for n in names]
        pre = model.data_preprocessor
        if scope == 'mmpretrain':
            from mmpretrain.registry import BATCH_AUGMENTS
            expected = [BATCH_AUGMENTS.get(n) for n in names]
            built = pre.batch_augments
            built = list(getattr(built, 'augments', [built] if built else []))
            built = [a for a in built if a is not None]
            if names:
                assert type(model).__name__ == 'MixImageClassifier', line
        else:
            built = list(pre.batch_augments or [])
            if 'MixSegDataPreProcessor' in text:
                assert type(pre).__name__ == 'MixSegDataPreProcessor'
        assert [type(a) for a in built] == expected, (line, names, built)
        init = cfg.model.backbone.get('init_cfg') or {}
        if 'checkpoints/' in text:
            assert init.get('checkpoint', '').startswith('checkpoints/'), line
    assert set(frameworks) == {'mmpretrain', 'mmdet', 'mmseg'}


# ----------------------------------------------------- the commands (slow)
COMMAND_PAGES = [p for p in PAGES
                 if any(not allowed(c.text) for c in page_commands(p))]


@pytest.mark.slow
@pytest.mark.parametrize('page', COMMAND_PAGES)
def test_page_commands_run(page, docs_data, tmp_path):
    ws, env = _workspace(tmp_path, docs_data)
    report = run_page(page, ws, env)
    print(f'\n{page}:\n  ' + '\n  '.join(report))
