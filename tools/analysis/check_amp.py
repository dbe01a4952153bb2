"""Backbones in mixed precision: ``benchmark.py --check-amp``, old name.

Every argument goes on to ``tools/analysis/benchmark.py --check-amp``
(``--help`` lists them).
"""
import os.path as osp
import runpy
import sys

BENCHMARK = osp.join(osp.dirname(osp.abspath(__file__)), 'benchmark.py')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return runpy.run_path(BENCHMARK)['main'](['--check-amp', *argv])


if __name__ == '__main__':
    sys.exit(main())
