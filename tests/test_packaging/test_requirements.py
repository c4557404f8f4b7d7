"""Issue 15: the dependency metadata never puts an upstream OpenMMLab
distribution and its fork (same import name) into one environment, and each
install profile names what it needs."""
import ast
import os.path as osp
import re

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: distributions that own the same import name
SAME_IMPORT = {
    'mmcv': {'mmcv', 'mmcv-lite', 'onedl-mmcv'},
    'mmengine': {'mmengine', 'onedl-mmengine'},
    'mmpretrain': {'mmpretrain', 'onedl-mmpretrain'},
    'mmdet': {'mmdet', 'onedl-mmdetection'},
    'mmseg': {'mmsegmentation', 'onedl-mmsegmentation'},
}


def _names(lines):
    out = set()
    for line in lines:
        line = line.split('#')[0].strip()
        if line and not line.startswith('-'):
            name = re.split(r'[<>=!~;\[ ]', line)[0]
            out.add(name.lower().replace('_', '-'))
    return out


def _requirements(name):
    with open(osp.join(REPO, name)) as f:
        return _names(f)


def _extras():
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'extras_require':
            return {
                k.value: _names(e.value for e in v.elts if isinstance(
                    e, ast.Constant))
                for k, v in zip(node.value.keys, node.value.values)
                if isinstance(v, ast.List)
            }
    raise AssertionError('setup.py has no extras_require')


def _clashes(names):
    return {imp: names & dists for imp, dists in SAME_IMPORT.items()
            if len(names & dists) > 1}


def test_each_requirements_file_installs_one_distribution_per_import_name():
    files = {
        'requirements.txt': {'mmcv', 'mmengine', 'mmpretrain', 'mmdet',
                             'mmsegmentation'},
        'requirements/classification.txt': {'mmcv-lite', 'mmengine',
                                             'mmpretrain'},
        'requirements/onedl.txt': {'onedl-mmcv', 'onedl-mmengine',
                                   'onedl-mmpretrain', 'onedl-mmdetection',
                                   'onedl-mmsegmentation'},
    }
    for name, expected in files.items():
        names = _requirements(name)
        assert not _clashes(names), (name, _clashes(names))
        mm = set().union(*SAME_IMPORT.values())
        assert names & mm == expected, (name, names & mm)


def test_no_extra_mixes_the_stacks():
    extras = _extras()
    assert {'mm', 'onedl'} <= set(extras)
    upstream = {'mmcv', 'mmcv-lite', 'mmengine', 'mmpretrain', 'mmdet',
                'mmsegmentation'}
    for name, names in extras.items():
        assert not _clashes(names), (name, _clashes(names))
        if name != 'mm':
            assert not names & upstream, (name, names & upstream)
        if name != 'onedl':
            assert not any(n.startswith('onedl-') for n in names), name


def test_install_script_checks_the_venv_for_both():
    script = open(osp.join(REPO, 'tools', 'install.sh')).read()
    assert "'onedl-mmengine'" in script and "'mmcv-lite'" in script
    assert 'uninstall -q -y mmcv-lite' in script
