"""The ``learned`` patch scorer: shapes, the no-weights error, weights in
the backbone's state dict and checkpoints, static mode and compilation."""
import math

import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.benchmark.overhead import count_overhead
from mmapt.models import APTEVA02
from mmapt.tokenizer import LearnedScorer, build_scorer, scorer_names
from mmapt.tokenizer.learned_scorer import find_scorer_weights

SIZES = (16, 32, 64)
CFG = dict(
    arch=dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False),
    img_size=256,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1),
    patch_sizes=SIZES)


def _trained_scorer(seed=0, channels=8) -> LearnedScorer:
    """A learned scorer with (seeded) weights loaded as a checkpoint would."""
    torch.manual_seed(seed)
    scorer = build_scorer(
        dict(type='learned', patch_sizes=SIZES[1:], channels=channels))
    scorer.network.load_state_dict(scorer.network.state_dict())
    return scorer


def _scorer_file(tmp_path, prefix='scorer.', seed=0) -> str:
    net = _trained_scorer(seed).network
    path = str(tmp_path / 'scorer.pth')
    torch.save(
        dict(state_dict={
            prefix + k: v
            for k, v in net.state_dict().items()
        }), path)
    return path


def _gray(batch=2, height=128, width=192, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, generator=gen) * 255


def test_registered_and_map_shapes():
    assert 'learned' in scorer_names()
    scorer = _trained_scorer()
    maps = scorer(_gray(), SIZES[1:])
    assert [tuple(m.shape) for m in maps] == [(2, 4, 6), (2, 2, 3)]
    for m in maps:
        assert m.dtype == torch.float32 and bool((m > 0).all())
    # Each image is scored on its own: batch order does not matter.
    flipped = scorer(_gray().flip(0), SIZES[1:])
    torch.testing.assert_close(flipped[0], maps[0].flip(0))


def test_wrong_patch_sizes_named():
    with pytest.raises(ValueError, match=r'built for patch sizes \(32, 64\)'):
        _trained_scorer()(_gray(height=256, width=384), (32, 64, 128))
    with pytest.raises(ValueError, match='multiples of the 16-px base'):
        build_scorer(dict(type='learned', patch_sizes=(24, )))


def test_hand_made_scorers_unchanged_and_not_in_state_dict():
    """The hand-made scorers have no network, so APT backbones with them
    have exactly the state-dict keys they had."""
    for name in ('entropy', 'contrast', 'gradient', 'importance'):
        assert build_scorer(name).network is None
    backbone = APTEVA02(thresholds=(1, 1), scorer='contrast', **CFG)
    assert not [k for k in backbone.state_dict() if 'apt_scorer' in k]


def test_without_weights_it_stops_before_the_first_forward():
    scorer = build_scorer(dict(type='learned', patch_sizes=SIZES[1:]))
    with pytest.raises(ValueError, match='no trained weights'):
        scorer(_gray(), SIZES[1:])
    backbone = APTEVA02(
        thresholds=(0.1, 0.1),
        scorer=dict(type='learned', patch_sizes=SIZES[1:]),
        **CFG).eval()
    x = flat_and_noise_images(1, 256, 256, (128, 128))
    with pytest.raises(ValueError, match='checkpoint=PATH'):
        backbone(x)
    # A checkpoint without the scorer (a plain model's) does not count.
    plain = {
        k: v
        for k, v in backbone.state_dict().items() if 'apt_scorer' not in k
    }
    backbone.load_state_dict(plain, strict=False)
    with pytest.raises(ValueError, match='no trained weights'):
        backbone(x)


def test_checkpoint_argument_and_state_dict_round_trip(tmp_path):
    path = _scorer_file(tmp_path)
    want = _trained_scorer()(_gray(), SIZES[1:])
    loaded = build_scorer(
        dict(
            type='learned', checkpoint=path, patch_sizes=SIZES[1:],
            channels=8))
    for a, b in zip(loaded(_gray(), SIZES[1:]), want):
        torch.testing.assert_close(a, b)

    scorer_cfg = dict(type='learned', patch_sizes=SIZES[1:], channels=8)
    x = flat_and_noise_images(1, 256, 256, (128, 128))
    source = APTEVA02(
        thresholds=(1, 1),
        keep_ratio=0.5,
        scorer=dict(scorer_cfg, checkpoint=path),
        **CFG).eval()
    assert 'apt_scorer.heads.0.2.weight' in source.state_dict()
    assert not any(p.requires_grad for p in source.apt_scorer.parameters())
    model_file = str(tmp_path / 'model.pth')
    torch.save(
        dict(state_dict={
            'backbone.' + k: v
            for k, v in source.state_dict().items()
        }), model_file)
    # The weights come with the model checkpoint (init_cfg Pretrained).
    target = APTEVA02(
        thresholds=(1, 1),
        keep_ratio=0.5,
        scorer=scorer_cfg,
        init_cfg=dict(
            type='Pretrained', checkpoint=model_file, prefix='backbone.'),
        **CFG)
    target.init_weights()
    target.eval()
    with torch.no_grad():
        for a, b in zip(target(x), source(x)):
            torch.testing.assert_close(a, b)
        layout_a, layout_b = target.tokenize(x), source.tokenize(x)
    assert torch.equal(layout_a.tokens_per_image, layout_b.tokens_per_image)
    # ... and a scorer checkpoint can also be a whole model's.
    again = build_scorer(dict(scorer_cfg, checkpoint=model_file))
    for a, b in zip(again(_gray(), SIZES[1:]), want):
        torch.testing.assert_close(a, b)


def test_find_scorer_weights_needs_exactly_one_copy():
    net = _trained_scorer().network
    state = net.state_dict()
    two = {
        **{
            'a.' + k: v
            for k, v in state.items()
        },
        **{
            'b.' + k: v
            for k, v in state.items()
        }
    }
    with pytest.raises(ValueError, match=r'2 \(\[\'a\.\', \'b\.\'\]\)'):
        find_scorer_weights(two, net)
    with pytest.raises(ValueError, match='holds no learned-scorer'):
        find_scorer_weights({'backbone.x': torch.zeros(1)}, net)
    # A Runner checkpoint: the tensors under 'state_dict'.
    wrapped = dict(state_dict={'a.' + k: v for k, v in state.items()})
    got = find_scorer_weights(wrapped, net)
    assert got.keys() == state.keys()


def _static_backbone(tmp_path, pack_size=256):
    return APTEVA02(
        thresholds=(1.0, 1.0),
        pack_size=pack_size,
        scorer=dict(
            type='learned',
            checkpoint=_scorer_file(tmp_path),
            patch_sizes=SIZES[1:],
            channels=8),
        **CFG).eval()


def test_static_mode_no_host_sync(tmp_path):
    static = _static_backbone(tmp_path)
    exact = _static_backbone(tmp_path, pack_size=None)
    x = flat_and_noise_images(1, 256, 256, (128, 128))
    with torch.no_grad():
        counts = count_overhead(lambda: static(x), model=static)
        assert counts.total_syncs == 0, counts.sync_sites
        assert counts.ops['tokenizer'] > 0
        for a, b in zip(static(x), exact(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_no_graph_break(tmp_path):
    static = _static_backbone(tmp_path)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(static, fullgraph=True, backend=backend)
    scorer = static.tokenizer.scorer
    explained = torch._dynamo.explain(scorer.network)(_gray())
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    with torch.no_grad():
        for seed in (0, 1):
            x = flat_and_noise_images(1, 256, 256, (64 * (seed + 1), 128),
                                      seed)
            for a, b in zip(compiled(x), static(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1  # one graph, no recompilation


def _varied_contrast_images(batch=2, size=256, seed=0):
    """Normalised images whose 16-px cells hold noise of random amplitude
    (0 to 100 gray levels): patches of every size differ in contrast."""
    gen = torch.Generator().manual_seed(seed)
    amp = torch.rand(batch, 1, size // 16, size // 16, generator=gen) * 100
    amp = amp.repeat_interleave(16, 2).repeat_interleave(16, 3)
    noise = torch.rand(batch, 3, size, size, generator=gen) - 0.5
    pixels = (128 + amp * noise).clamp(0, 255)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def test_untrained_contrast_prior_ranks_exactly_like_contrast():
    """Before training, the default network's score is a fixed increasing
    function of contrast, the same for every patch size: its thresholds
    and budgets choose contrast's patches."""
    scorer = _trained_scorer()  # default prior, weights as initialised
    assert scorer.network.prior == 'contrast'
    gray = _gray()
    contrast = build_scorer('contrast')(gray, SIZES[1:])
    for ours, theirs in zip(scorer(gray, SIZES[1:]), contrast):
        torch.testing.assert_close(ours, (1 + theirs) * math.exp(-4))
    # Budget mode compares all sizes at once: the same layout as contrast.
    x = _varied_contrast_images()
    common = dict(keep_ratio=0.5, thresholds=(1, 1), **CFG)
    learned = APTEVA02(
        scorer=dict(type='learned', patch_sizes=SIZES[1:], channels=8),
        **common).eval()
    learned.apt_scorer.load_state_dict(learned.apt_scorer.state_dict())
    hand = APTEVA02(scorer='contrast', **common).eval()
    with torch.no_grad():
        ours, theirs = learned.tokenize(x), hand.tokenize(x)
    assert 0 < int(ours.tokens_per_image.sum()) < 2 * 256
    assert torch.equal(ours.cell_to_token, theirs.cell_to_token)
    assert torch.equal(ours.embed_index, theirs.embed_index)
    # Training moves away from it: a non-zero correction changes scores.
    with torch.no_grad():
        scorer.network.heads[0][-1].bias.fill_(1.0)
    torch.testing.assert_close(
        scorer(gray, SIZES[1:])[0], (1 + contrast[0]) * math.exp(-3))


def test_prior_choice_and_checkpoint_mismatch_named(tmp_path):
    with pytest.raises(ValueError, match="prior must be None or 'contrast'"):
        build_scorer(dict(type='learned', prior='entropy'))
    # A gray-only network (scorers trained before the option) ...
    torch.manual_seed(0)
    old = build_scorer(
        dict(type='learned', patch_sizes=SIZES[1:], channels=8, prior=None))
    assert old.network.prior is None
    assert 'trunk.4.0.weight' in old.network.state_dict()
    old_file = str(tmp_path / 'old.pth')
    torch.save(
        dict(state_dict={
            'scorer.' + k: v
            for k, v in old.network.state_dict().items()
        }), old_file)
    cfg = dict(type='learned', patch_sizes=SIZES[1:], channels=8)
    # ... loads with prior=None and scores as before ...
    again = build_scorer(dict(cfg, prior=None, checkpoint=old_file))
    with torch.no_grad():
        want = [m.exp() for m in old.network(_gray())]
    for a, b in zip(again(_gray(), SIZES[1:]), want):
        torch.testing.assert_close(a, b)
    # ... and the default says which prior to set.
    with pytest.raises(
            ValueError,
            match=r"trained with prior=None.*"
            r"scorer=dict\(type='learned', prior=None"):
        build_scorer(dict(cfg, checkpoint=old_file))
    new_file = _scorer_file(tmp_path)
    with pytest.raises(ValueError, match="trained with prior='contrast'"):
        build_scorer(dict(cfg, prior=None, checkpoint=new_file))
    # The same through a model checkpoint (init_cfg / load_from).
    backbone = APTEVA02(thresholds=(1, 1), scorer=cfg, **CFG).eval()
    state = {
        k: v
        for k, v in backbone.state_dict().items() if 'apt_scorer' not in k
    }
    state.update({
        'apt_scorer.' + k: v
        for k, v in old.network.state_dict().items()
    })
    with pytest.raises(ValueError, match='trained with prior=None'):
        backbone.load_state_dict(state, strict=False)
    # mmengine's loader (init_cfg Pretrained, load_from) stops there too.
    from mmengine.runner.checkpoint import load_state_dict
    with pytest.raises(ValueError, match='trained with prior=None'):
        load_state_dict(backbone, state, strict=False)
