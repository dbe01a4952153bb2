"""Unreadable images in a user's folder (issue 19): the folder tools skip
them with a warning and process the rest, the demo stops in one line before
building a model, and the demo's picture has a capped size."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from test_tokenizer_tools import ROOT, load_tool

from mmapt.apis import ImageReadError, read_image
from mmapt.apis.image_folder import ImageFolder, progress_bar


@pytest.fixture(scope='module')
def mixed_dir(tmp_path_factory):
    """Two good images, a corrupt PNG (a header and garbage), an empty file
    and a truncated JPEG, sorted in between."""
    folder = tmp_path_factory.mktemp('mixed')
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((128, 256, 3), 90,
                            np.uint8)).save(folder / 'a_plain.png')
    (folder / 'b_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' +
                                           rng.bytes(300))
    (folder / 'c_empty.jpg').write_bytes(b'')
    Image.fromarray(rng.integers(0, 255, (128, 128, 3),
                                 dtype=np.uint8)).save(folder / 'd_noise.png')
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(
        folder / 'full.jpg', quality=90)
    data = (folder / 'full.jpg').read_bytes()
    (folder / 'e_truncated.jpg').write_bytes(data[:len(data) // 3])
    os.remove(folder / 'full.jpg')
    return folder


@pytest.fixture(scope='module')
def bad_only_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bad_only')
    (folder / 'x.png').write_bytes(b'not an image at all')
    (folder / 'y.jpg').write_bytes(b'')
    return folder


BAD = ('b_corrupt.png', 'c_empty.jpg', 'e_truncated.jpg')


def test_read_image_names_file_and_problem(mixed_dir):
    assert read_image(str(mixed_dir / 'a_plain.png')).shape == (128, 256, 3)
    for name, problem in (('b_corrupt.png',
                           'not an image file'), ('c_empty.jpg', 'empty file'),
                          ('e_truncated.jpg', 'truncated'), ('missing.png',
                                                             'no such file')):
        with pytest.raises(ImageReadError) as info:
            read_image(str(mixed_dir / name))
        message = str(info.value)
        assert name in message and problem in message
        assert '\n' not in message


def test_image_folder_skips_and_reports(mixed_dir, capsys):
    import io
    stream = io.StringIO()
    folder = ImageFolder(str(mixed_dir), desc='test', stream=stream)
    names = [os.path.basename(path) for path, _ in folder]
    assert names == ['a_plain.png', 'd_noise.png']
    assert [os.path.basename(p) for p, _ in folder.skipped] == list(BAD)
    log = stream.getvalue()
    assert log.count('warning: skipping') == 3
    assert 'test: 5/5' in log  # progress reaches the end
    assert folder.summary().startswith('2 of 5 images read; skipped 3')
    folder.check_some_read()  # two were read: no error


def test_progress_in_a_log_is_one_final_line_with_the_notes():
    import io
    stream = io.StringIO()
    with progress_bar(100, 'work', stream) as advance:
        for step in range(100):
            advance('warning: odd step' if step == 40 else None)
    lines = stream.getvalue().splitlines()
    # Not a terminal: the note, then the bar once, at its end.
    assert len(lines) == 2 and lines[0] == 'warning: odd step'
    assert lines[1].startswith('work: 100/100')


def test_progress_on_a_terminal_is_redrawn_in_place():
    import io

    class Terminal(io.StringIO):

        def isatty(self):
            return True

    stream = Terminal()
    with progress_bar(3, 'work', stream) as advance:
        for _ in range(3):
            advance()
    text = stream.getvalue()
    assert 'work: 3/3' in text
    assert '\x1b[' in text  # cursor control: the line is rewritten


def test_no_progress_still_prints_the_warnings(mixed_dir):
    import io
    stream = io.StringIO()
    folder = ImageFolder(str(mixed_dir), progress=False, stream=stream)
    assert len(list(folder)) == 2
    log = stream.getvalue()
    assert log.count('warning: skipping') == 3 and '5/5' not in log


def test_visualize_skips_unreadable_files(mixed_dir, tmp_path, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    out = tmp_path / 'vis'
    assert tool.main([
        str(mixed_dir), '--patch-sizes', '16', '32', '64', '--thresholds', '2',
        '0.3', '--out',
        str(out), '--json'
    ]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [os.path.basename(r['image'])
            for r in rows] == ['a_plain.png', 'd_noise.png']
    for name in BAD:
        assert f'warning: skipping {mixed_dir / name}' in captured.err
    assert 'skipped 3 unreadable' in captured.err
    assert 'visualize_patches: 5/5' in captured.err  # progress, on stderr
    assert sorted(
        os.listdir(out)) == ['a_plain_patches.png', 'd_noise_patches.png']


def test_calibrate_skips_unreadable_files(mixed_dir, capsys):
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    assert tool.main([
        str(mixed_dir), '--canvas', '256', '--patch-sizes', '16', '32', '64',
        '--reference', '2', '1', '--target-keep', '0.6', '--json'
    ]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds the JSON only
    assert result['images'] == 2
    assert [os.path.basename(p) for p in result['skipped']] == list(BAD)
    assert 'skipped 3 unreadable' in captured.err


@pytest.mark.parametrize('tool_path,extra', [
    ('tools/analysis/visualize_patches.py', []),
    ('tools/analysis/calibrate_thresholds.py', ['--target-keep', '0.5']),
])
def test_folder_tools_fail_when_nothing_is_readable(bad_only_dir, tool_path,
                                                    extra, capsys):
    tool = load_tool(tool_path)
    assert tool.main([str(bad_only_dir), *extra]) == 1
    err = capsys.readouterr().err
    assert 'none of the 2 image files could be read' in err


def test_bins_is_a_hidden_alias_of_entropy_bins(mixed_dir, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    assert tool.parse_args(['x', '--bins', '64']).entropy_bins == 64
    assert tool.parse_args(['x', '--entropy-bins', '32']).entropy_bins == 32
    assert tool.parse_args(['x']).entropy_bins == 512
    calib = load_tool('tools/analysis/calibrate_thresholds.py')
    args = calib.parse_args(['x', '--target-keep', '0.5', '--bins', '128'])
    assert args.entropy_bins == 128
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    assert '--bins' not in capsys.readouterr().out


@pytest.mark.parametrize('name', ['b_corrupt.png', 'c_empty.jpg'])
def test_demo_rejects_bad_image_before_building_the_model(
        mixed_dir, name, monkeypatch):
    demo = load_tool('demo/image_demo.py')

    def no_model(*args, **kwargs):
        raise AssertionError('the model was built for an unreadable image')

    monkeypatch.setattr(demo, 'build_model', no_model)
    with pytest.raises(SystemExit) as info:
        demo.main([
            str(mixed_dir / name),
            os.path.join(ROOT, 'configs/toy/toy_apt_det.py'), '--device', 'cpu'
        ])
    message = str(info.value)
    assert message.startswith('error: image') and name in message
    assert '\n' not in message


def test_demo_picture_of_a_thin_strip_is_capped():
    demo = load_tool('demo/image_demo.py')
    strip = np.zeros((40, 4000, 3), np.uint8)
    grid = np.zeros((512, 512, 3), np.uint8)
    picture = demo.compose_picture([(strip, 'prediction'), (grid, 'patches')])
    assert max(picture.shape[:2]) <= demo.DEFAULT_MAX_SIZE
    small = demo.compose_picture([(strip, 'a'), (grid, 'b')], max_size=1024)
    assert small.shape[1] <= 1024
    # A usual picture keeps its panels' full resolution.
    photo = np.zeros((480, 640, 3), np.uint8)
    canvas = np.zeros((1536, 1536, 3), np.uint8)
    usual = demo.compose_picture([(photo, 'a'), (canvas, 'b')])
    assert usual.shape[1] == 2 * 1536 + demo.GAP
