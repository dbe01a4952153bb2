# EVA-02-B + UperNet, the architecture of the released EVA-02 ADE20K
# segmentors (eva02_B_ade_seg_upernet_sz512.pth; converter:
# tools/model_converters/eva02_seg_to_mmapt.py, see docs/reproduce.md):
# global attention with a class token, four taps (out_indices 3, 5, 7, 11)
# turned into a stride 4/8/16/32 pyramid by ViTPyramidNeck (x4: ConvT, BN,
# GELU, ConvT; x2: ConvT; x1; max-pool), UPerHead + auxiliary FCNHead, slide
# inference.
# Neck and heads use SyncBN like the released models (same keys and running
# statistics). One process (CPU or GPU): mmengine reverts SyncBN to BN. For
# CPU-only multi-process runs (gloo) set norm_cfg = dict(type='BN',
# requires_grad=True) in the neck and both heads: same keys, per-process
# statistics.
norm_cfg = dict(type='SyncBN', requires_grad=True)
# The released segmentors were fine-tuned with ImageNet statistics (RGB,
# 0-255), not the CLIP ones of EVA-02's pre-training.
imagenet_mean = [123.675, 116.28, 103.53]
imagenet_std = [58.395, 57.12, 57.375]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=imagenet_mean,
    std=imagenet_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512),
    # Pad test images to at least one crop: every slide window then has the
    # crop size, a multiple of APT's largest patch.
    test_cfg=dict(size=(512, 512)))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='EVA02',
        arch='base',
        img_size=512,
        patch_size=16,
        window_size=0,
        global_attn_indexes=(),
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.15,
        # Class token first in the sequence (no RoPE on it), dropped before
        # the neck; its position row heads the table.
        use_cls_token=True,
        # RoPE keeps the pre-training reference grid (224 / 14 = 16) ...
        pretrain_img_size=224,
        pretrain_patch_size=14,
        # ... while the position table is stored at the fine-tune grid
        # (512 / 16), added without resampling at that size.
        pos_embed_grid=32,
        # Weights made by the EVA-02 checkpoint converter (p14 -> p16), see
        # docs/segmentation.md; init_cfg=None trains from scratch.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/eva02_B_pt_in21k_p16_mmapt.pth')),
    neck=dict(
        type='ViTPyramidNeck',
        embed_dim=768,
        rescales=(4, 2, 1, 0.5),
        norm_cfg=norm_cfg,
        act_cfg=dict(type='GELU')),
    decode_head=dict(
        type='UPerHead',
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=768,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=768,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
# The backbone settings of the APT twin (apt_*.py: `model =
# dict(backbone=_base_.apt_backbone)`): patch sizes 16 and 32 with the APT
# paper's segmentation threshold 5.75 for the 32-pixel scale. The tokenizer
# un-normalises with the data preprocessor's mean/std: a config that changes
# those changes these too (tests/test_configs/test_config_inheritance.py
# checks every twin).
apt_backbone = dict(
    type='APTEVA02',
    thresholds=(5.75, ),
    patch_sizes=(16, 32),
    entropy_bins=512,
    mean=imagenet_mean,
    std=imagenet_std)
