"""Export a tiny APT detector config to ONNX (one graph per bucket) with
tools/deployment/export_onnx.py and run it in ONNX Runtime: outputs equal
eager static mode on photographs in each bucket, the bucket is the one
static mode picks, capping follows static mode, and bad inputs are refused
with a message naming the fix. The exports are made once per module and
shared; the tools run in this process (their ``main``), which spares a
Python start and the imports of every call."""
import contextlib
import io
import json
import os
import os.path as osp
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

pytest.importorskip('onnxruntime', reason='pip install .[deploy]')
pytest.importorskip('skimage', reason='the sample photographs')

BUCKETS = (144, 192)
# Packed tokens of the sample photographs on the 256 canvas with the
# thresholds below: camera 133, rocket 130, hubble 73 (bucket 144);
# chelsea 172, coffee 169, motorcycle 172 (bucket 192); astronaut 229 (no
# bucket holds it: capped to 192).
PHOTOS = {
    144: ('camera.png', 'rocket.jpg', 'hubble_deep_field.jpg'),
    192: ('chelsea.png', 'coffee.png', 'motorcycle_left.png'),
}
OVERFLOWING = 'astronaut.png'
TINY_DET = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=2),
        global_attn_indexes=(1, ),
        thresholds=(5.0, 5.0, 0.3)),
    neck=dict(backbone_channel=48, in_channels=[12, 24, 48, 48]))
"""
TINY_PLAIN_DET = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=2),
        global_attn_indexes=(1, )),
    neck=dict(backbone_channel=48, in_channels=[12, 24, 48, 48]))
"""


def write_config(folder, text: str, base: str) -> str:
    path = osp.join(str(folder), 'tiny_' + osp.basename(base))
    with open(path, 'w') as f:
        f.write(text.format(base=osp.join(ROOT, base)))
    return path


def tool(relative: str, argv) -> str:
    """stdout of a tool's ``main(argv)`` run in this process; SystemExit
    (with the tool's message) when it fails."""
    main = runpy.run_path(osp.join(ROOT, relative))['main']
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def photo(name: str, manifest: dict) -> np.ndarray:
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.deploy.runtime import prepare_image
    path = [p for p in sample_photo_paths() if p.endswith(name)][0]
    return prepare_image(load_rgb(path), manifest)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(export folder, config path, eager model) of the tiny APT detector,
    exported by the CLI from a saved checkpoint."""
    from mmengine.config import Config

    from mmapt.deploy import build_model
    folder = tmp_path_factory.mktemp('deploy')
    config = write_config(folder, TINY_DET, 'configs/toy/toy_apt_det.py')
    torch.manual_seed(0)
    model = build_model(Config.fromfile(config))
    checkpoint = str(folder / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    out = str(folder / 'onnx')
    stdout = tool('tools/deployment/export_onnx.py', [
        config, checkpoint, '--bucket', BUCKETS[1], '--bucket', BUCKETS[0],
        '--out', out
    ])
    printed = json.loads(stdout[stdout.index('{'):])
    assert printed['buckets'] == list(BUCKETS)
    return out, config, model


@pytest.fixture(scope='module')
def plain_exported(tmp_path_factory):
    """(export folder, manifest, eager model) of the tiny plain detector,
    exported by the library from the built model."""
    from mmengine.config import Config

    from mmapt.deploy import build_model, export_deployment
    folder = tmp_path_factory.mktemp('deploy_plain')
    cfg = Config.fromfile(
        write_config(folder, TINY_PLAIN_DET, 'configs/toy/toy_eva02_det.py'))
    torch.manual_seed(0)
    model = build_model(cfg)
    with pytest.raises(ValueError, match='plain backbone.*drop --bucket'):
        export_deployment(cfg, str(folder / 'x'), buckets=[64], model=model)
    out = str(folder / 'onnx')
    return out, export_deployment(cfg, out, model=model), model


@pytest.fixture(scope='module')
def runtime(exported):
    from mmapt.deploy import ONNXRuntimeModel
    return ONNXRuntimeModel(exported[0], intra_op_num_threads=1)


def eager(model, x: np.ndarray, pack_size):
    """Backbone + neck in eager PyTorch, APT pack size as given."""
    from mmapt.deploy.graphs import FeatureGraph
    adapter = model.backbone.apt
    saved = adapter.pack_size
    adapter.pack_size = pack_size
    try:
        with torch.no_grad():
            return FeatureGraph(model.backbone, model.neck)(
                torch.from_numpy(x))
    finally:
        adapter.pack_size = saved


def test_manifest_lists_files_and_outputs(exported):
    from mmengine.config import Config

    from mmapt.deploy import config_hash, read_manifest
    out, config, _ = exported
    manifest = read_manifest(out)
    assert manifest['config'] == 'tiny_toy_apt_det'
    assert manifest['config_hash'] == config_hash(Config.fromfile(config))
    assert manifest['input']['shape'] == [1, 3, 256, 256]
    assert [b['pack_size'] for b in manifest['buckets']] == list(BUCKETS)
    assert [o['name'] for o in manifest['outputs']] == \
        [f'feat{i}' for i in range(5)]
    for entry in manifest['buckets'] + [manifest['count_graph']]:
        assert osp.isfile(osp.join(out, entry['file']))


def test_attention_exports_without_passes_over_the_scores(exported):
    """The key masks ride in the score product: no IsNaN / Where pass over
    the (groups, heads, L, L) scores (what made ONNX Runtime slow), one
    Softmax per block."""
    import onnx
    out = exported[0]
    for name in os.listdir(out):
        if name.endswith('.onnx') and '_b' in name:
            ops = [
                node.op_type
                for node in onnx.load(osp.join(out, name)).graph.node
            ]
            assert 'IsNaN' not in ops and ops.count('Softmax') == 2, name


@pytest.mark.parametrize('bucket', BUCKETS)
def test_ort_equals_eager_static_mode_per_bucket(exported, runtime, bucket):
    _, _, model = exported
    for name in PHOTOS[bucket]:
        x = photo(name, runtime.manifest)
        want_size = model.backbone.apt.select_pack_size(
            torch.from_numpy(x), buckets=BUCKETS)
        result = runtime(x)
        assert result.pack_size == want_size == bucket, name
        assert not result.capped
        assert result.packed_tokens == \
            model.backbone.tokenize(torch.from_numpy(x)).num_tokens
        static = eager(model, x, list(BUCKETS))
        exact = eager(model, x, None)
        for got, want, unpadded in zip(result.outputs.values(), static, exact):
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)
            # in a bucket that holds it, static mode equals exact packing
            np.testing.assert_allclose(
                got, unpadded.numpy(), rtol=0, atol=1e-4)


def test_overflow_caps_like_static_mode(exported, runtime):
    _, _, model = exported
    x = photo(OVERFLOWING, runtime.manifest)
    with pytest.warns(UserWarning, match='capped'):
        result = runtime(x)
    assert result.capped and result.pack_size == BUCKETS[-1]
    assert result.packed_tokens > BUCKETS[-1]
    capped = eager(model, x, BUCKETS[-1])
    for got, want in zip(result.outputs.values(), capped):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)


def test_overflow_error_names_the_fix(exported):
    from mmapt.deploy import ONNXRuntimeModel
    strict = ONNXRuntimeModel(exported[0], on_overflow='error')
    with pytest.raises(ValueError, match='export a larger bucket'):
        strict(photo(OVERFLOWING, strict.manifest))


def test_bad_images_are_refused(runtime):
    with pytest.raises(ValueError, match='larger than the exported canvas'):
        runtime(np.zeros((1, 3, 320, 256), np.float32))
    with pytest.raises(ValueError, match='smaller than the exported canvas'):
        runtime(np.zeros((1, 3, 128, 256), np.float32))
    with pytest.raises(ValueError, match='batches of 1'):
        runtime(np.zeros((2, 3, 256, 256), np.float32))


def test_another_config_is_refused(exported, tmp_path):
    from mmapt.deploy import ONNXRuntimeModel
    out, config, _ = exported
    other = tmp_path / 'other.py'
    other.write_text(open(config).read().replace('5.0, 5.0', '4.0, 4.0'))
    with pytest.raises(ValueError, match='hash'):
        ONNXRuntimeModel(out, config=str(other))
    ONNXRuntimeModel(out, config=config)  # its own config passes


def test_replaced_file_is_refused(exported, tmp_path):
    from mmapt.deploy import ONNXRuntimeModel
    from mmapt.deploy.manifest import read_manifest, write_manifest
    copy = tmp_path / 'copy'
    shutil.copytree(exported[0], copy)
    manifest = read_manifest(str(copy))
    # a graph of another config in place of a bucket file
    foreign = tmp_path / 'foreign.onnx'
    import onnx
    model = onnx.load(str(copy / manifest['buckets'][0]['file']))
    for entry in model.metadata_props:
        if entry.key == 'mmapt_config_hash':
            entry.value = '0' * 64
    onnx.save(model, str(foreign))
    shutil.copy(foreign, copy / manifest['buckets'][0]['file'])
    with pytest.raises(ValueError, match='SHA-256 differs'):
        ONNXRuntimeModel(str(copy))
    with pytest.raises(ValueError, match='exported from another config'):
        ONNXRuntimeModel(str(copy), check_files=False)
    manifest['format'] = 'something-else'
    write_manifest(str(copy), manifest)
    with pytest.raises(ValueError, match='format'):
        ONNXRuntimeModel(str(copy))
    with pytest.raises(FileNotFoundError, match='deploy.json'):
        ONNXRuntimeModel(str(tmp_path))


def test_missing_provider_is_named(exported):
    from mmapt.deploy import ONNXRuntimeModel, available_providers
    assert 'CPUExecutionProvider' in available_providers()
    with pytest.raises(ValueError, match='not available.*onnxruntime-gpu'):
        ONNXRuntimeModel(exported[0], providers=['NoSuchExecutionProvider'])


def test_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    from mmapt.deploy import ONNXRuntimeModel, require_deploy_packages
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match=r'pip install \.\[deploy\]'):
        ONNXRuntimeModel(exported[0])
    with pytest.raises(ImportError, match=r'onnxruntime.*\.\[deploy\]'):
        require_deploy_packages()


def test_onnx_infer_cli_prints_bucket_and_saves(exported, runtime, tmp_path):
    from mmapt.apis.images import sample_photo_paths
    out, config, _ = exported
    path = [p for p in sample_photo_paths() if p.endswith('camera.png')][0]
    stdout = tool(
        'tools/deployment/onnx_infer.py',
        [out, path, '--config', config, '--threads', '1', '--save', tmp_path])
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line['bucket'] == 144 and line['capped'] is False
    assert line['outputs']['feat0'] == [1, 32, 64, 64]
    saved = np.load(tmp_path / 'camera.npz')
    want = runtime(photo('camera.png', runtime.manifest)).outputs
    np.testing.assert_array_equal(saved['feat0'], want['feat0'])
    with pytest.raises(SystemExit, match='onnx_infer: .*hash'):
        tool('tools/deployment/onnx_infer.py', [
            out, path, '--config',
            osp.join(ROOT, 'configs/toy/toy_apt_det.py')
        ])


def test_heads_in_pytorch_on_ort_features(exported, runtime):
    """The detector's RPN and cascade RoI heads (mmcv ops, not exported)
    on ONNX Runtime features give eager mmdet's detections."""
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.deploy.heads import det_data_sample, detect
    _, _, model = exported
    path = [p for p in sample_photo_paths() if p.endswith('coffee.png')][0]
    rgb = load_rgb(path)
    got = detect(runtime, model, rgb)
    assert got['pack_size'] == 192
    x = torch.from_numpy(photo('coffee.png', runtime.manifest))
    adapter = model.backbone.apt
    adapter.pack_size = list(BUCKETS)
    try:
        with torch.no_grad():
            want = model.predict(x,
                                 [det_data_sample(rgb.shape[:2],
                                                  (256, 256))])[0]
    finally:
        adapter.pack_size = None
    got, want = got['pred_instances'], want.pred_instances
    assert len(want) > 0 and len(got) == len(want)
    assert got.bboxes[:, 2].max() > 256  # rescaled to the 400 x 600 photo
    np.testing.assert_allclose(got.bboxes, want.bboxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-4)
    assert torch.equal(got.labels, want.labels)


def test_plain_detector_exports_one_graph(plain_exported):
    from mmapt.deploy import ONNXRuntimeModel
    from mmapt.deploy.graphs import FeatureGraph
    out, manifest, model = plain_exported
    assert [b['pack_size'] for b in manifest['buckets']] == [None]
    assert manifest['count_graph'] is None and not manifest['apt']
    runtime = ONNXRuntimeModel(out)
    x = photo('coffee.png', manifest)
    result = runtime(x)
    assert result.pack_size is None and result.packed_tokens is None
    with torch.no_grad():
        want = FeatureGraph(model.backbone, model.neck)(torch.from_numpy(x))
    for got, ref in zip(result.outputs.values(), want):
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-4)


def test_session_options_reach_the_sessions_and_bad_ones_are_named(exported):
    from mmapt.deploy import ONNXRuntimeModel
    runtime = ONNXRuntimeModel(
        exported[0],
        intra_op_num_threads=1,
        session_options=dict(enable_cpu_mem_arena=False))
    assert runtime.options.enable_cpu_mem_arena is False
    assert runtime.options.intra_op_num_threads == 1
    for session in runtime.sessions.values():
        assert session.get_session_options().enable_cpu_mem_arena is False
    with pytest.raises(
            ValueError,
            match="'mem_arena' is not.*valid: "
            '.*enable_cpu_mem_arena'):
        ONNXRuntimeModel(exported[0], session_options=dict(mem_arena=False))


def test_benchmark_interleaves_every_arm_in_the_chosen_bucket(
        exported, plain_exported):
    """Two APT arms (the same export under two labels), plain, and the
    eager arms: every image is timed in every arm, in the bucket the
    runtime chooses; the summary is the ratio of the totals."""
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.deploy.benchmark import benchmark_onnx
    from mmapt.deploy.runtime import prepare_image
    out, _, apt_model = exported
    plain_out, manifest, plain_model = plain_exported
    names = ('camera.png', 'coffee.png')
    images = [load_rgb(p) for p in sample_photo_paths() if p.endswith(names)]
    rows = []
    report = benchmark_onnx(
        dict(apt=out, again=out),
        plain_out,
        images,
        threads=1,
        repeat=2,
        apt_model=apt_model,
        plain_model=plain_model,
        on_row=rows.append)
    assert report['images'] == rows and len(rows) == 2
    arms = ('ort_apt', 'ort_again', 'ort_plain', 'torch_apt', 'torch_plain')
    for rgb, row in zip(images, rows):
        want = apt_model.backbone.apt.select_pack_size(
            torch.from_numpy(prepare_image(rgb, manifest)), buckets=BUCKETS)
        assert row['ort_apt_bucket'] == row['ort_again_bucket'] == want
        assert row['ort_apt_packed_tokens'] == row[
            'ort_again_packed_tokens'] <= want
        assert not row['ort_apt_capped']
        assert all(row[f'{arm}_ms'] > 0 for arm in arms)
    assert [r['ort_apt_bucket'] for r in rows] == [144, 192]
    summary = report['summary']
    total = {a: sum(r[f'{a}_ms'] for r in rows) for a in arms}
    assert summary['ort_apt_speedup'] == pytest.approx(total['ort_plain'] /
                                                       total['ort_apt'])
    assert summary['ort_vs_torch_plain'] == pytest.approx(
        total['torch_plain'] / total['ort_plain'])
    assert report['session_options'] == dict(enable_cpu_mem_arena=False)
    if sys.platform == 'linux':
        assert set(report['run_memory_gib']) == set(arms)
        assert all(v >= 0 for v in report['run_memory_gib'].values())


def test_benchmark_cli_names_its_arms(exported, plain_exported):
    out, plain_out = exported[0], plain_exported[0]
    parse = runpy.run_path(
        osp.join(ROOT, 'tools/deployment/benchmark_onnx.py'))['export_arms']
    assert parse([out, f'fine={out}']) == dict(apt=out, fine=out)
    with pytest.raises(SystemExit, match='given twice'):
        parse([f'a={out}', f'a={plain_out}'])
    with pytest.raises(SystemExit, match='other than "plain"'):
        parse([f'plain={out}'])


def test_deploy_places_photographs_as_the_pytorch_tools_do(runtime):
    """prepare_image (ONNX Runtime's input) is the analysis tools' canvas
    view of the photograph, normalised; a non-square export canvas fits
    the photograph inside it the same way."""
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.apis.views import (CANVAS_PAD_VALUE, canvas_content_size,
                                  normalise, prepare_view)
    from mmapt.deploy.runtime import prepare_image
    path = [p for p in sample_photo_paths() if p.endswith('coffee.png')][0]
    rgb = load_rgb(path)  # 400 x 600
    manifest = runtime.manifest
    view = prepare_view(rgb, canvas=256)
    want = normalise([view], manifest['input']['mean'],
                     manifest['input']['std']).numpy()
    np.testing.assert_array_equal(prepare_image(rgb, manifest), want)
    assert (view[171:] == CANVAS_PAD_VALUE).all()  # 600 -> 256: 171 rows
    wide = dict(
        manifest, input=dict(manifest['input'], shape=[1, 3, 128, 256]))
    x = prepare_image(rgb, wide)
    assert x.shape == (1, 3, 128, 256)
    assert canvas_content_size(400, 600, (128, 256)) == (128, 192)
    pad = normalise([np.full((1, 1, 3), CANVAS_PAD_VALUE, np.uint8)],
                    manifest['input']['mean'], manifest['input']['std'])
    np.testing.assert_allclose(x[0, :, :, 192:],
                               np.broadcast_to(pad.numpy()[0], (3, 128, 64)))
    assert not np.allclose(x[0, :, :, 191], pad.numpy()[0, :, :, 0])


def photo_folder(folder, names, broken: bool = False) -> str:
    """A folder of sample photographs (and an empty, unreadable .png)."""
    from mmapt.apis.images import sample_photo_paths
    os.makedirs(folder)
    for path in sample_photo_paths():
        if osp.basename(path) in names:
            shutil.copy(path, folder)
    if broken:
        open(osp.join(folder, 'broken.png'), 'w').close()
    return str(folder)


def test_fit_buckets_counts_as_the_runtime_and_exports_them(
        exported, tmp_path, capsys):
    """--fit-buckets: each photograph's count is the one the exported
    count graph gives; the buckets are the fewest tokens for those counts
    (camera 133, rocket 130, hubble 73, chelsea 172 -> 192 and the canvas's
    256); deploy.json records them and the fit; held-out photographs are
    reported, unreadable files skipped with a warning."""
    from mmapt.apis.images import load_rgb
    from mmapt.deploy import ONNXRuntimeModel, read_manifest
    from mmapt.deploy.runtime import prepare_image
    from mmapt.tokenizer.layout import choose_pack_size, fit_pack_sizes
    _, config, _ = exported
    checkpoint = osp.join(osp.dirname(exported[0]), 'tiny.pth')
    calib = photo_folder(
        tmp_path / 'calib', PHOTOS[144] + ('chelsea.png', ), broken=True)
    held = photo_folder(tmp_path / 'held', PHOTOS[192][1:])
    out = str(tmp_path / 'onnx')
    stdout = tool('tools/deployment/export_onnx.py', [
        config, checkpoint, '--fit-buckets', calib, '--num-buckets', 2,
        '--held-out', held, '--out', out
    ])
    assert 'skipping' in capsys.readouterr().err
    fit, _ = json.JSONDecoder().raw_decode(stdout[stdout.index('{'):])
    counts = fit['packed_tokens']
    assert sorted(map(osp.basename,
                      counts)) == sorted(PHOTOS[144] + ('chelsea.png', ))
    assert fit['buckets'] == [192, 256]
    assert tuple(fit['buckets']) == fit_pack_sizes(counts.values(), 2, 256)
    assert fit['fitted']['run_tokens'] == 4 * 192
    assert fit['fitted']['exact_tokens'] == sum(counts.values())
    assert fit['fitted']['plain_tokens'] == 4 * 256
    assert fit['auto']['buckets'] == [64, 128, 192, 256]
    assert fit['held_out']['fitted']['run_tokens'] == 2 * 192
    assert 'pack_size=[192, 256]' in fit['pack_size_config']

    manifest = read_manifest(out)
    assert [b['pack_size'] for b in manifest['buckets']] == [192, 256]
    assert manifest['bucket_fit']['buckets'] == [192, 256]
    runtime = ONNXRuntimeModel(out, config=config, intra_op_num_threads=1)
    # The printed config line gives PyTorch's static mode the same buckets.
    from mmengine.config import Config

    from mmapt.deploy import build_model
    setting = {}
    exec(fit['pack_size_config'], setting)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(model=setting['model']))
    adapter = build_model(cfg).backbone.apt
    assert adapter.pack_sizes(1, 256, 256) == (192, 256)
    for path, count in counts.items():
        x = prepare_image(load_rgb(path), manifest)
        assert runtime.packed_tokens(x) == count, path
        assert runtime.select_bucket(x)[0] == choose_pack_size(
            count,
            (192, 256)) == adapter.select_pack_size(torch.from_numpy(x))


def test_fit_buckets_errors_name_the_fix(exported, plain_exported, tmp_path):
    from mmapt.deploy.buckets import fit_buckets
    from mmapt.deploy.export import input_entry
    _, config, model = exported
    photos = photo_folder(tmp_path / 'photos', ('camera.png', ))

    def fails(argv, message):
        with pytest.raises(SystemExit, match=message):
            tool('tools/deployment/export_onnx.py', argv)

    fails([config, '--fit-buckets', photos, '--num-buckets', 0],
          'number of buckets must be an int >= 1')
    os.makedirs(tmp_path / 'empty')
    fails([config, '--fit-buckets', tmp_path / 'empty'], 'no images')
    broken = photo_folder(tmp_path / 'broken', (), broken=True)
    fails([config, '--fit-buckets', broken], 'no readable image')
    plain = osp.join(osp.dirname(plain_exported[0]), 'tiny_toy_eva02_det.py')
    fails([plain, '--fit-buckets', photos], 'plain backbone.*no buckets')
    fails([config, '--fit-buckets', photos, '--bucket', 192], 'not both')
    fails([config, '--held-out', photos, '--out', tmp_path / 'x'],
          'give --fit-buckets')
    fails([config], r'--out DIR')
    fails([config, '--fit-buckets', photos, '--batch-size', 2],
          'single images.*--batch-size 1')
    from mmengine.config import Config
    with pytest.raises(ValueError, match='plain backbone'):
        fit_buckets(plain_exported[2].backbone, photos, 2,
                    input_entry(Config.fromfile(plain)))
    assert fit_buckets(
        model.backbone,
        photos,
        3,
        input_entry(Config.fromfile(config)),
        progress=False).buckets == (192, 256)


def test_match_thresholds_exports_one_budget_bucket(exported, plain_exported,
                                                    tmp_path):
    """--match-thresholds: budget mode at the keep ratio of the thresholds'
    mean count on the photographs (camera 133, rocket 130, hubble 73,
    chelsea 172: 127 of 256 tokens), one bucket (128) that every image
    fills, picked without the count graph; ORT equals eager static mode
    on photographs of either threshold bucket and on one that overflows
    them."""
    from mmengine.config import Config

    from mmapt.deploy import ONNXRuntimeModel, build_model, read_manifest
    _, config, threshold_model = exported
    checkpoint = osp.join(osp.dirname(exported[0]), 'tiny.pth')
    calib = photo_folder(tmp_path / 'calib', PHOTOS[144] + ('chelsea.png', ))
    out = str(tmp_path / 'onnx')
    stdout = tool(
        'tools/deployment/export_onnx.py',
        [config, checkpoint, '--match-thresholds', calib, '--out', out])
    matched, _ = json.JSONDecoder().raw_decode(stdout[stdout.index('{'):])
    counts = matched['packed_tokens']
    assert sorted(counts.values()) == [73, 130, 133, 172]
    assert matched['threshold_keep']['mean'] == round(508 / 4 / 256, 4)
    assert matched['keep_ratio'] == 0.4961  # 127/256 rounded up
    manifest = read_manifest(out)
    assert [b['pack_size'] for b in manifest['buckets']] == [128]
    assert manifest['fixed_packed_tokens'] == 127  # 4 + 3 * 41 splits
    assert manifest['matched_thresholds']['keep_ratio'] == 0.4961

    cfg = Config.fromfile(config)
    cfg.merge_from_dict({'model.backbone.keep_ratio': 0.4961})
    # The export is the config with the matched keep ratio.
    runtime = ONNXRuntimeModel(out, config=cfg, intra_op_num_threads=1)
    model = build_model(cfg)
    model.load_state_dict(threshold_model.state_dict())
    assert runtime.count_session is None  # nothing to count
    # One of each threshold bucket, and astronaut, which overflows them.
    for name in (PHOTOS[144][0], PHOTOS[192][0], OVERFLOWING):
        x = photo(name, manifest)
        result = runtime(x)
        assert (result.pack_size, result.packed_tokens,
                result.capped) == (128, 127, False)
        assert int(
            model.backbone.apt.tokenizer.layout(
                torch.from_numpy(x)).num_real_packed) == 127
        for got, want in zip(result.outputs.values(), eager(model, x, 128)):
            np.testing.assert_allclose(got, want.numpy(), atol=1e-4)

    def fails(argv, message):
        with pytest.raises(SystemExit, match=message):
            tool('tools/deployment/export_onnx.py', argv)

    fails([config, '--match-thresholds', calib, '--bucket', 128],
          'drop --bucket')
    budget = write_config(tmp_path,
                          TINY_DET.replace('0.3)),', '0.3), keep_ratio=0.5),'),
                          'configs/toy/toy_apt_det.py')
    fails([budget, '--match-thresholds', calib], 'already in budget mode')
    fails([config, '--match-thresholds', calib, '--batch-size', 2],
          'matched on single images.*--batch-size 1')
    plain = osp.join(osp.dirname(plain_exported[0]), 'tiny_toy_eva02_det.py')
    fails([plain, '--match-thresholds', calib],
          'plain backbone.*thresholds to match')
