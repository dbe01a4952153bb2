# Copyright (c) mmapt contributors. All rights reserved.
"""mmapt's packaging.

``pip install -e .`` (or ``pip install .``) into an existing OpenMMLab 2.x
environment installs mmapt with the requirements of
``requirements/openmmlab.txt`` and ``requirements/runtime.txt``. torch,
torchvision and mmcv are NOT installed from here: they must match the
machine's CUDA (docs/install.md); ``make setup`` builds the pinned stack.

For ``mim`` the configs, tools and model index are placed in
``mmapt/.mim/`` (copies in a wheel or sdist, symbolic links for an editable
install), as OpenMMLab's own packages do.
"""
import os
import os.path as osp
import shutil
import sys
import warnings
from setuptools import find_packages, setup
from typing import List

ROOT = osp.dirname(osp.abspath(__file__))
# What `mim train/test/run mmapt ...` looks for in mmapt/.mim/.
MIM_FILES = ('configs', 'tools', 'demo', 'model-index.yml')
# torch / torchvision / numpy / opencv pins of requirements/build.txt are the
# tested toolchain of `make setup`, not requirements of the package.
REQUIREMENT_FILES = ('requirements/openmmlab.txt', 'requirements/runtime.txt')


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(ROOT, 'mmapt', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def parse_requirements(*paths: str) -> List[str]:
    """The requirement lines of ``paths`` (comments, blank lines and ``-r``
    includes dropped)."""
    requirements = []
    for path in paths:
        with open(osp.join(ROOT, path)) as f:
            for line in f:
                line = line.split('#', 1)[0].strip()
                if line and not line.startswith('-'):
                    requirements.append(line)
    return requirements


def add_mim_extension() -> None:
    """Fill ``mmapt/.mim`` with the configs, tools and model index: symbolic
    links for ``develop`` / editable installs, copies when a wheel or an
    sdist is built (or where links are not possible)."""
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build')):
        mode = 'copy'
    else:
        return
    mim_root = osp.join(ROOT, 'mmapt', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        dst = osp.join(mim_root, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src, mim_root), dst)
                continue
            except OSError:
                warnings.warn(f'cannot link {dst}; copying {src} instead')
        if osp.isdir(src):
            shutil.copytree(
                src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmapt',
        version=read_version(),
        description='Adaptive Patch Transformers (APT) for dense prediction '
        'in OpenMMLab',
        long_description=open(osp.join(ROOT, 'README.md')).read(),
        long_description_content_type='text/markdown',
        keywords='computer vision, vision transformer, adaptive patches, '
        'object detection, semantic segmentation',
        packages=find_packages(include=['mmapt', 'mmapt.*']),
        include_package_data=True,
        package_data={'mmapt': ['.mim/**/*', '.mim/*']},
        python_requires='>=3.10',
        license='Apache-2.0',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Operating System :: POSIX :: Linux',
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        install_requires=parse_requirements(*REQUIREMENT_FILES),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'vis': parse_requirements('requirements/vis.txt'),
            'deploy': parse_requirements('requirements/deploy.txt'),
        },
        zip_safe=False)
