"""Backbones in mixed precision: ``benchmark.py --check-amp``, old name.

Every argument goes on to ``tools/analysis/benchmark.py --check-amp``
(``--help`` lists them); its exit status is this script's.
"""
import os.path as osp
import runpy
import sys

sys.argv.insert(1, '--check-amp')
runpy.run_path(
    osp.join(osp.dirname(__file__), 'benchmark.py'), run_name='__main__')
