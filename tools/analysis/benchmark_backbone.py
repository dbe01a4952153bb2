"""APT vs plain backbones: ``benchmark.py --backbone-only``, old name.

Every argument goes on to ``tools/analysis/benchmark.py --backbone-only``
(``--help`` lists them).
"""
import os.path as osp
import runpy
import sys

BENCHMARK = osp.join(osp.dirname(osp.abspath(__file__)), 'benchmark.py')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return runpy.run_path(BENCHMARK)['main'](['--backbone-only', *argv])


if __name__ == '__main__':
    sys.exit(main())
