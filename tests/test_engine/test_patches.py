"""``import mixplugins``: the mmengine patches come from one table, each
applied only to the mmengine versions it names, and an error raised inside
the package is never hidden."""
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmengine')
import mmengine  # noqa: E402

from mixplugins.engine import patches  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _python(code):
    return subprocess.run([sys.executable, '-c', code],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=300)


def test_every_patch_names_its_versions_and_installs():
    names = [p.name for p in patches.PATCHES]
    assert names == ['safe_globals', 'atomic_save', 'robust_last_checkpoint',
                     'atomic_last_checkpoint', 'keep_allow_list',
                     'mmseg_config_scope']
    for p in patches.PATCHES:
        first, last = p.versions
        assert p.applies_to(first) and p.applies_to(last)
        assert not p.applies_to('0.9.1') and not p.applies_to('99.0.0')
        assert p.fixes and callable(p.install)
    assert patches.Patch('x', 'y', ('0.10.0', '0.10.7'),
                         print).applies_to('0.10.7rc1')


#: What ``import mixplugins`` installs on the two stacks CI runs, written
#: out by hand (the versions and features of ``PATCHES`` are the code under
#: test): upstream mmengine 0.10.7 needs the torch >= 2.6 load fixes and the
#: atomic writes; onedl-mmengine 0.10.12 (with onedl-mmsegmentation) also
#: the allow-list kept through its scoped safe loads and the ``mmseg::``
#: scope.
EXPECTED_PATCHES = {
    ('mmengine', '0.10.7'): [
        'safe_globals', 'atomic_save', 'robust_last_checkpoint',
        'atomic_last_checkpoint'
    ],
    ('onedl-mmengine', '0.10.12'): [
        'safe_globals', 'atomic_save', 'robust_last_checkpoint',
        'atomic_last_checkpoint', 'keep_allow_list', 'mmseg_config_scope'
    ],
}


def test_patches_apply_to_the_running_mmengine():
    import importlib.metadata as metadata
    dists = {d.metadata['Name'].lower() for d in metadata.distributions()}
    dist = 'onedl-mmengine' if 'onedl-mmengine' in dists else 'mmengine'
    key = (dist, mmengine.__version__)
    assert key in EXPECTED_PATCHES, f'no expectation written for {key}'
    assert patches.install_patches() == EXPECTED_PATCHES[key]
    assert patches.applied_patches() == EXPECTED_PATCHES[key]


def test_outside_their_versions_the_patches_are_skipped_and_logged():
    res = _python(
        'import logging, sys; logging.basicConfig(level=logging.INFO); '
        'import mmengine; mmengine.__version__ = "0.99.0"; '
        'import mmengine.runner.checkpoint as c; '
        'before = c.save_checkpoint; '
        'import mixplugins; from mixplugins.engine import patches; '
        'assert patches.applied_patches() == [], patches.applied_patches(); '
        'assert c.save_checkpoint is before')
    assert res.returncode == 0, res.stderr
    for p in patches.PATCHES:
        assert f"patch '{p.name}' skipped" in res.stderr


def test_a_missing_framework_is_listed_not_raised():
    res = _python('import sys; sys.modules["mmseg"] = None; '
                  'import mixplugins; m = mixplugins.missing(); '
                  'assert "segmentation" in m and "mmseg" in m["segmentation"]'
                  ', m; assert "classification" not in m, m')
    assert res.returncode == 0, res.stderr


def test_an_error_inside_the_package_is_never_hidden():
    # a module of the package that cannot be imported (as a broken adapter
    # file would be) must fail `import mixplugins`, not vanish
    res = _python('import sys; '
                  'sys.modules["mixplugins.segmentation.cutmix"] = None; '
                  'import mixplugins')
    assert res.returncode != 0
    assert 'mixplugins.segmentation.cutmix' in res.stderr


def test_the_allow_list_survives_a_scoped_safe_load(tmp_path):
    """onedl-mmengine's ``_safe_torch_load`` loads inside
    ``torch.serialization.safe_globals(...)``, whose exit removes the
    entries it names from torch's process-wide list; ``keep_allow_list``
    registers ours again. Run on both stacks: upstream mmengine has no
    ``_safe_torch_load``, so the fork's function is reproduced here."""
    import torch
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import checkpoint as ckpt_module

    from mixplugins.engine.checkpoint import (allow_mm_checkpoint_globals,
                                              install_keep_allow_list)

    def scoped_load(file, map_location=None, weights_only=None):
        with torch.serialization.safe_globals([HistoryBuffer]):
            return torch.load(file, map_location=map_location,
                              weights_only=True)

    allow_mm_checkpoint_globals()
    path = str(tmp_path / 'hb.pth')
    buffer = HistoryBuffer()
    buffer.update(1.0)
    buffer.update(2.0)
    torch.save({'hb': buffer}, path)
    had = getattr(ckpt_module, '_safe_torch_load', None)
    ckpt_module._safe_torch_load = getattr(had, '__wrapped__', scoped_load)
    try:
        install_keep_allow_list()
        ckpt_module._safe_torch_load(path)
        assert HistoryBuffer in torch.serialization.get_safe_globals()
        assert torch.load(path)['hb'].current() == 2.0
    finally:
        if had is None:
            del ckpt_module._safe_torch_load
        else:
            ckpt_module._safe_torch_load = had
        allow_mm_checkpoint_globals()


def test_mmseg_config_bases_resolve_when_the_distribution_name_differs(
        tmp_path, monkeypatch):
    """onedl-mmsegmentation provides ``mmseg`` but no distribution named
    ``mmsegmentation``, which mmengine's table maps ``mmseg::`` to. The
    fork's situation is reproduced on either stack by pointing the table at
    a distribution that is not installed."""
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.config import utils

    from mixplugins.engine.config_scope import (install_mmseg_scope,
                                                mmseg_scope_unresolvable)

    monkeypatch.setitem(utils.MODULE2PACKAGE, 'mmseg',
                        'mixplugins-no-such-distribution')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("_base_ = ['mmseg::upernet/"
                   "upernet_r50_4xb4-80k_ade20k-512x512.py']\n")
    with pytest.raises(Exception, match='not installed'):
        Config.fromfile(str(cfg))
    assert mmseg_scope_unresolvable()
    install_mmseg_scope()
    assert not mmseg_scope_unresolvable()
    assert Config.fromfile(str(cfg)).model.type == 'EncoderDecoder'
