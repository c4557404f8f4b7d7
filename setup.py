import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mixplugins', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


EVAL = ['imagecorruptions-imaug>=1.1.5', 'tqdm', 'matplotlib']

setup(
    name='mixplugins',
    version=read_version(),
    description='R-Mix, RL-Mix and RecursiveMix for OpenMMLab 2.0 '
    '(mmpretrain, mmdetection, mmsegmentation)',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['mixplugins', 'mixplugins.*']),
    python_requires='>=3.9',
    # The OpenMMLab stacks are pinned in requirements.txt (upstream),
    # requirements/classification.txt (upstream, mmcv-lite) and
    # requirements/onedl.txt (the forks), installed by tools/install.sh.
    install_requires=['torch>=2.0', 'numpy'],
    extras_require={
        # The frameworks, without mmcv (built or installed first; see
        # docs/install.md). Two stacks own the same import names (mmengine,
        # mmpretrain, mmdet, mmseg): `mm` is upstream OpenMMLab, `onedl` the
        # maintained onedl-* forks. Install one of them, never both.
        'mm': ['mmengine>=0.10,<1.0', 'mmpretrain>=1.2,<2.0',
               'mmdet>=3.3,<4.0', 'mmsegmentation>=1.2,<2.0',
               'ftfy', 'regex'],
        'onedl': ['onedl-mmengine>=0.10.12,<1.0',
                  'onedl-mmpretrain>=1.3,<2.0',
                  'onedl-mmdetection>=3.5,<4.0',
                  'onedl-mmsegmentation>=1.4,<2.0', 'ftfy', 'regex'],
        'rl': ['stable-baselines3>=2.3', 'gymnasium>=0.29'],
        # tools/analysis/robustness.py: the ImageNet-C corruptions (the
        # maintained fork; imagecorruptions 1.1.2 fails on NumPy 2), the
        # progress bar and the plots
        'eval': EVAL,
        # torchmetrics and torchattacks: references the tests check the
        # calibration metric and the attacks against
        'tests': [
            'pytest>=7', 'pytest-timeout', 'scikit-learn',
            'torchmetrics>=1.0', 'torchattacks>=3.5'
        ] + EVAL,
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
    ],
)
