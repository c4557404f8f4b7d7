import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mixplugins', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


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
    # The OpenMMLab stack itself is pinned in requirements.txt and installed
    # by tools/install.sh (mmcv must be built from source).
    install_requires=['torch>=2.0', 'numpy'],
    extras_require={
        'mm': ['mmengine>=0.10,<1.0', 'mmpretrain>=1.2,<2.0',
               'mmdet>=3.3,<4.0', 'mmsegmentation>=1.2,<2.0',
               'ftfy', 'regex'],
        'rl': ['stable-baselines3>=2.3', 'gymnasium>=0.29'],
        'tests': ['pytest>=7', 'pytest-timeout', 'scikit-learn',
                  'matplotlib'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
    ],
)
