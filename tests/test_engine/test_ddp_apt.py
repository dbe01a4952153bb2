"""DDP without find_unused_parameters: 2 CPU processes (gloo) train the toy
APT detector while one rank's batch merges nothing.

DDP without ``find_unused_parameters`` raises at the next forward when a
parameter got no gradient in the previous backward. APTEmbed runs its
larger-patch scales on zero tokens while training, so the APT layers get a
(zero) gradient on the rank whose images merge nothing; the configs can
therefore drop ``find_unused_parameters`` (which makes every DDP iteration
walk the autograd graph).
"""
import json
import os.path as osp
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT

pytest.importorskip('mmdet')

ITERS = 3


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, out_dir):
    import os

    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from test_detection_configs import synthetic_batch

    import mmapt  # noqa: F401
    from mmapt.models.backbones import count_tokens

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        init_default_scope('mmdet')
        from mmdet.registry import MODELS
        cfg = Config.fromfile(
            osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py'))
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        ddp = MMDistributedDataParallel(
            module=model,
            device_ids=None,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        optim = build_optim_wrapper(ddp, cfg.optim_wrapper)
        apt_before = model.backbone.apt_embed.zero_linear.weight.clone()
        # Rank 0: a shape on a flat background (merges); rank 1: noise
        # everywhere (merges nothing).
        batch = synthetic_batch('flat' if rank == 0 else 'noise')
        keep, losses = [], []
        for _ in range(ITERS):
            with count_tokens(model.backbone) as counter:
                log_vars = ddp.train_step(batch, optim)
            keep.append(counter.per_image()['keep_ratio'].tolist())
            losses.append(float(log_vars['loss']))
        apt_after = model.backbone.apt_embed.zero_linear.weight.detach()
        # Replicas stay identical: gradients were all-reduced every step.
        gathered = [torch.zeros_like(apt_after) for _ in range(world_size)]
        dist.all_gather(gathered, apt_after.contiguous())
        result = dict(
            find_unused_parameters=ddp.find_unused_parameters,
            keep=keep,
            losses=losses,
            apt_moved=bool((apt_after - apt_before).abs().max() > 0),
            replicas_equal=all(torch.equal(g, gathered[0]) for g in gathered))
    finally:
        dist.destroy_process_group()
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)


@pytest.mark.slow
def test_ddp_without_find_unused_parameters(tmp_path):
    mp.spawn(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [
        json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)
    ]
    assert not any(r['find_unused_parameters'] for r in ranks)
    # Rank 0 merged patches, rank 1 none, in every iteration.
    assert all(k[0] < 0.8 for k in ranks[0]['keep'])
    assert all(k == [1.0] for k in ranks[1]['keep'])
    for r in ranks:
        assert len(r['losses']) == ITERS
        assert all(loss == loss and abs(loss) < 1e4 for loss in r['losses'])
        assert r['replicas_equal']
        # The zero-initialised APT layer learned (from rank 0's merges).
        assert r['apt_moved']
