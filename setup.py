from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmapt/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmapt',
    version=read_version(),
    description='Adaptive Patch Transformers (APT) for dense prediction in OpenMMLab',
    packages=find_packages(include=['mmapt', 'mmapt.*']),
    python_requires='>=3.10',
    license='Apache-2.0',
)
