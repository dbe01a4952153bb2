"""The README, docs/ and configs/ refer only to files inside the repository.

Checked in every Markdown, Python and YAML file there: no path that climbs
out of the repository (``../shared/...``, absolute paths of a machine), every
relative Markdown link resolves to a file of the repository, and every
``*.md`` file named in the text exists in the repository.
"""
import glob
import os.path as osp
import re
from typing import List

import pytest
from conftest import ROOT

SUFFIXES = ('.md', '.py', '.yml', '.yaml')

# A path that leaves the repository: ../ chains reaching above the root are
# found through the links below; these catch the rest.
OUTSIDE = re.compile(r'(\.\./)+shared/|\bshared/design\b|'
                     r'(?<![\w.~])/(?:work|home|root|mnt)/')
MD_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
MD_NAME = re.compile(r'[\w./-]*[\w-]\.md\b')


def checked_files() -> List[str]:
    files = [osp.join(ROOT, 'README.md')]
    for folder in ('docs', 'configs'):
        files += [
            p for p in glob.glob(
                osp.join(ROOT, folder, '**', '*'), recursive=True)
            if p.endswith(SUFFIXES)
        ]
    return sorted(files)


def repo_markdown_names() -> set:
    return {
        osp.basename(p)
        for p in glob.glob(osp.join(ROOT, '**', '*.md'), recursive=True)
        if '/.venv/' not in p
    }


def problems(path: str, text: str, md_names: set) -> List[str]:
    """What in ``text`` (the content of ``path``) points outside the
    repository or to a file that does not exist."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f'{osp.relpath(path, ROOT)}:{number}'
        if OUTSIDE.search(line):
            found.append(f'{where}: path outside the repository: {line!r}')
        for target in MD_LINK.findall(line):
            if re.match(r'[a-z]+://|#|mailto:', target):
                continue
            file = osp.normpath(
                osp.join(osp.dirname(path),
                         target.split('#')[0]))
            if not file.startswith(ROOT + osp.sep) or not osp.exists(file):
                found.append(f'{where}: link {target!r} leaves the '
                             'repository or names no file')
        for name in MD_NAME.findall(line):
            if '://' in line and name in line.split('://', 1)[1]:
                continue  # part of a web address
            if osp.basename(name) not in md_names:
                found.append(f'{where}: {name!r} is not a file of the '
                             'repository')
    return found


@pytest.mark.parametrize(
    'path', checked_files(), ids=lambda p: osp.relpath(p, ROOT))
def test_file_refers_only_to_the_repository(path):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    assert problems(path, text, repo_markdown_names()) == []


def test_the_check_finds_outside_references():
    path = osp.join(ROOT, 'docs', 'example.md')
    names = repo_markdown_names()
    bad = ('Read `../shared/design/apt-reference.md` first.\n'
           'See [the notes](../../notes.md) and [design](missing.md).\n'
           'Weights in /work/main/checkpoints.\n'
           'The recipe (apt-reference.md, section 6).\n')
    found = problems(path, bad, names)
    assert len(found) == 8, found  # a line can break two rules
    good = ('See [design](design.md#units), [the README](../README.md) and '
            '[a paper](https://arxiv.org/abs/2510.18091); method.md.\n')
    assert problems(path, good, names) == []
