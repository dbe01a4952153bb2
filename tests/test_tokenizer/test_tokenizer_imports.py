"""mmapt/tokenizer/ is the torch floor: image decoding, drawing and command
lines live with the tools (mmapt/apis, mmapt/visualization)."""
import ast
import glob
import os

from conftest import ROOT

FORBIDDEN = ('cv2', 'PIL', 'argparse', 'mmcv', 'mmengine', 'mmdet', 'mmseg',
             'rich', 'matplotlib', 'skimage')


def imported_modules(path: str) -> set:
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return {name.split('.')[0] for name in names}


def test_tokenizer_imports_no_image_or_cli_packages():
    files = glob.glob(os.path.join(ROOT, 'mmapt', 'tokenizer', '*.py'))
    assert len(files) >= 5
    found = {
        os.path.basename(path):
        sorted(imported_modules(path) & set(FORBIDDEN))
        for path in files
    }
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_moved_modules_are_gone_from_the_tokenizer():
    for name in ('prepare.py', 'image_folder.py', 'score_picture.py'):
        assert not os.path.exists(
            os.path.join(ROOT, 'mmapt', 'tokenizer', name)), name
