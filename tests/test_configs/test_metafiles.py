"""``configs/detection`` and ``configs/segmentation`` carry a ``README.md``
and a ``metafile.yml`` (mim model-index format) as ``configs/classification``
does: every config of the folder is listed, every listed config exists, the
published numbers agree with the config headers (``Reproduces:``), with
``docs/model_zoo.md`` and with the README table, and a config that is not a
published row says so (``Published: false``, ``Results: null``, no number).

The numbers themselves are the RecursiveMix README's (recursivemix_spec §4),
written out here once more by hand as an independent copy.
"""
import glob
import os.path as osp
import re

import pytest
import yaml
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TASKS = ('detection', 'segmentation')
#: task -> (Results.Task, Results.Dataset, main metric)
RESULT_KIND = {
    'detection': ('Object Detection', 'COCO', 'box AP'),
    'segmentation': ('Semantic Segmentation', 'ADE20K', 'mIoU'),
}
#: config -> (README row, main metric) of the published rows; the
#: in-training variants are not published.
PUBLISHED = {
    'atss_r50_fpn_1x_coco': ("'ResNet-50'", 39.4),
    'atss_r50-cutmix_fpn_1x_coco': ("'+ CutMix'", 40.1),
    'atss_r50-rm_fpn_1x_coco': ("'+ RecursiveMix'", 41.5),
    'upernet_r50_512x512_80k_ade20k': ("'ResNet-50'", 40.40),
    'upernet_r50-cutmix_512x512_80k_ade20k': ("'+ CutMix'", 41.24),
    'upernet_r50-rm_512x512_80k_ade20k': ("'+ RecursiveMix'", 42.30),
}
UNPUBLISHED = ('atss_r50_fpn_rm-det_1x_coco',
               'upernet_r50_rm-seg_512x512_80k_ade20k')
NO_NUMBER = '—'
CODE = 'https://github.com/implus/RecursiveMix-pytorch'


def _read(rel):
    with open(osp.join(REPO, rel), encoding='utf-8') as f:
        return f.read()


def _configs(task):
    """Stems of the configs of a folder (``_base_`` excluded)."""
    return sorted(
        osp.splitext(osp.basename(p))[0]
        for p in glob.glob(osp.join(REPO, 'configs', task, '*.py')))


def _metafile(task):
    return yaml.safe_load(_read(f'configs/{task}/metafile.yml'))


def _models(task):
    return {m['Name']: m for m in _metafile(task)['Models']}


def _header(task, name):
    return _read(f'configs/{task}/{name}.py').split('_base_ =')[0]


def _numbers(text):
    return [float(n) for n in re.findall(r'[0-9]+\.[0-9]+', text)]


def _table_rows(page, task):
    """``name`` -> {column title: cell} for the table rows of ``page`` that
    name a config of ``configs/<task>/`` (as a link or in backticks)."""
    rows, titles = {}, None
    for line in _read(page).splitlines():
        if not line.startswith('|'):
            titles = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells[0] == 'config':
            titles = cells
            continue
        name = re.search(r'`([\w.-]+)\.py`', cells[0])
        linked = re.search(r'\]\(([^)]+\.py)\)', cells[0])
        if name is None or titles is None:
            continue
        if linked and f'configs/{task}/' not in linked.group(1):
            continue
        assert name.group(1) not in rows, f'{page}: listed twice: {line}'
        rows[name.group(1)] = dict(zip(titles, cells))
    return rows


def _cell(row, prefix):
    return next(v for k, v in row.items() if k.startswith(prefix))


def test_published_rows_are_the_expected_ones():
    listed = {n for t in TASKS for n in _configs(t)}
    assert listed == set(PUBLISHED) | set(UNPUBLISHED)


@pytest.mark.parametrize('task', TASKS)
def test_metafile_lists_every_config_and_only_existing_ones(task):
    meta = _metafile(task)
    names = [m['Name'] for m in meta['Models']]
    assert len(names) == len(set(names)), names
    assert sorted(names) == _configs(task), (
        f'not listed: {sorted(set(_configs(task)) - set(names))}, '
        f'no such config: {sorted(set(names) - set(_configs(task)))}')
    collections = {c['Name'] for c in meta['Collections']}
    for c in meta['Collections']:
        assert c['README'] == f'configs/{task}/README.md'
        assert osp.isfile(osp.join(REPO, c['README']))
    for model in meta['Models']:
        config = model['Config']
        assert config == f'configs/{task}/{model["Name"]}.py'
        assert osp.isfile(osp.join(REPO, config)), config
        assert model['In Collection'] in collections
        assert model['Paper']['URL'] == 'https://arxiv.org/abs/2203.06844'
        assert model['Code'] == CODE
        assert model['Source'].strip(), model['Name']


@pytest.mark.parametrize('task', TASKS)
def test_metafile_rows_agree_with_config_headers(task):
    kind, dataset, metric = RESULT_KIND[task]
    for name, model in _models(task).items():
        header = _header(task, name)
        reproduces = re.search(r'^# Reproduces: ([0-9.]+)', header, re.M)
        if name in UNPUBLISHED:
            assert model['Published'] is False, name
            assert model['Results'] is None, name
            assert 'Weights' not in model, name
            assert model['Source'].startswith('none: not a published row')
            assert reproduces is None, name
            assert 'Not a published recipe' in header, name
            continue
        row, number = PUBLISHED[name]
        assert model['Published'] is True, name
        (result, ) = model['Results']
        assert (result['Task'], result['Dataset']) == (kind, dataset)
        metrics = result['Metrics']
        assert metrics[metric] == pytest.approx(number), name
        # the header's number, and every further metric, as the header has it
        assert reproduces and float(reproduces.group(1)) == metrics[metric]
        for key, value in metrics.items():
            assert value in _numbers(header), (name, key, value)
        # the same README row in the header and in the metafile's source
        assert row in header.splitlines()[0], name
        assert 'RecursiveMix README' in model['Source'], name
        assert f'row {row}' in model['Source'], name
        assert model['Weights'].startswith('https://'), name


@pytest.mark.parametrize('task', TASKS)
def test_metafile_metadata_agrees_with_the_merged_configs(task):
    for name, model in _models(task).items():
        cfg = Config.fromfile(osp.join(REPO, model['Config']),
                              import_custom_modules=False)
        meta = model['Metadata']
        assert meta['Batch Size'] == cfg.auto_scale_lr.base_batch_size
        if task == 'detection':
            assert meta['Epochs'] == cfg.train_cfg.max_epochs
        else:
            assert meta['Iterations'] == cfg.train_cfg.max_iters
            size = 'x'.join(map(str, cfg.model.data_preprocessor.size))
            assert meta['Crop Size'] == size
        init = cfg.model.backbone.init_cfg.checkpoint
        pretraining = meta['Backbone Pretraining']
        if init.startswith('torchvision://'):
            assert pretraining.startswith(init), name
        else:  # checkpoints/r50_<method>_in1k_backbone.pth
            source = osp.basename(init).replace('_backbone.pth', '.py')
            assert pretraining.startswith(
                f'configs/classification/{source}'), name
            assert osp.isfile(osp.join(REPO, pretraining.split()[0]))


@pytest.mark.parametrize('task', TASKS)
def test_metafile_agrees_with_model_zoo(task):
    """The number and published checkpoint of each config that
    docs/model_zoo.md lists."""
    _, _, metric = RESULT_KIND[task]
    zoo = _table_rows('docs/model_zoo.md', task)
    assert zoo, 'docs/model_zoo.md lists no config of ' + task
    for name, model in _models(task).items():
        if name not in zoo:
            continue
        expected = _cell(zoo[name], 'expected')
        checkpoint = _cell(zoo[name], 'published checkpoint')
        if model['Results'] is None:
            assert expected == NO_NUMBER, (name, expected)
            assert checkpoint == 'none', (name, checkpoint)
            continue
        numbers = _numbers(expected)
        assert numbers and numbers[0] == model['Results'][0]['Metrics'][
            metric], (name, expected)
        link = re.search(r'\]\((https://[^)]+)\)', checkpoint)
        assert link and link.group(1) == model['Weights'], (name, checkpoint)


@pytest.mark.parametrize('task', TASKS)
def test_readme_table_lists_every_config(task):
    _, _, metric = RESULT_KIND[task]
    readme = f'configs/{task}/README.md'
    rows = _table_rows(readme, task)
    assert sorted(rows) == _configs(task)
    models = _models(task)
    for name, row in rows.items():
        published = _cell(row, f'published {metric}')
        checkpoint = _cell(row, 'published checkpoint')
        if models[name]['Results'] is None:
            assert published.startswith(NO_NUMBER), (name, published)
            assert 'not published' in _cell(row, 'paper'), name
            assert checkpoint == 'none', name
            continue
        metrics = models[name]['Results'][0]['Metrics']
        header = re.search(r'^# Reproduces: ([0-9.]+)', _header(task, name),
                           re.M).group(1)
        assert published.split()[0] == header, (name, published)
        # every metric of the metafile, and no other number
        assert sorted(_numbers(published)) == sorted(
            float(v) for v in metrics.values()), (name, published)
        row_name = PUBLISHED[name][0]
        assert f'row {row_name}' in _cell(row, 'paper'), name
        assert f']({models[name]["Weights"]})' in checkpoint, name


@pytest.mark.parametrize('task', TASKS)
def test_readme_relative_links_resolve(task):
    readme = f'configs/{task}/README.md'
    for target in re.findall(r'\[[^\]]*\]\(([^)\s]+)\)', _read(readme)):
        if re.match(r'[a-z]+:', target) or target.startswith('#'):
            continue
        path = osp.normpath(
            osp.join(REPO, osp.dirname(readme),
                     target.split('#')[0]))
        assert osp.exists(path), f'{readme}: broken link {target}'
