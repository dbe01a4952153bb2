"""APT vs plain backbones: ``benchmark.py --backbone-only``, old name.

Every argument goes on to ``tools/analysis/benchmark.py --backbone-only``
(``--help`` lists them); its exit status is this script's.
"""
import os.path as osp
import runpy
import sys

sys.argv.insert(1, '--backbone-only')
runpy.run_path(
    osp.join(osp.dirname(__file__), 'benchmark.py'), run_name='__main__')
