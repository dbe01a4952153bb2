# EVA-02-B + UperNet (official EVA-02 segmentation recipe): global attention,
# four taps (out_indices 3, 5, 7, 11) turned into a stride 4/8/16/32 pyramid by
# ViTPyramidNeck, UPerHead + auxiliary FCNHead, slide inference.
# Heads use SyncBN as in every UperNet recipe (2-4 images per GPU). On one
# process SyncBN behaves as BN; for CPU-only multi-process runs (gloo) set
# norm_cfg = dict(type='GN', num_groups=32, requires_grad=True).
norm_cfg = dict(type='SyncBN', requires_grad=True)
# EVA-02 was pre-trained with the OpenAI CLIP normalisation (RGB, 0-255).
eva02_mean = [122.7709383, 116.7460125, 104.09373615]
eva02_std = [68.5005327, 66.6321579, 70.32316305]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=eva02_mean,
    std=eva02_std,
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
        pretrain_img_size=224,
        pretrain_patch_size=14,
        # Weights made by the EVA-02 checkpoint converter (p14 -> p16), see
        # docs/segmentation.md; init_cfg=None trains from scratch.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/eva02_B_pt_in21k_p16_mmapt.pth')),
    neck=dict(
        type='ViTPyramidNeck',
        embed_dim=768,
        rescales=(4, 2, 1, 0.5),
        norm_cfg=dict(type='LN2d', eps=1e-6)),
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
