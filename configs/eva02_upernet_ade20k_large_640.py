# Baseline: plain EVA-02-L + UperNet on ADE20K, 640 x 640 crops, slide
# stride 426; the architecture of the released
# eva02_L_ade_seg_upernet_sz640.pth (EVA-02's "upernetpro" config): position
# table at 40 x 40 and wider heads (UPerHead 1536 channels, FCN aux 1536).
# Released mIoU 60.05 (single scale).
_base_ = [
    './_base_/models/upernet_eva02.py',
    './_base_/datasets/ade20k_640.py',
    './_base_/seg_default_runtime.py',
    './_base_/schedules/ade20k_80k.py',
]
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size)),
    backbone=dict(
        arch='large',
        img_size=640,
        pos_embed_grid=40,
        out_indices=(7, 11, 15, 23),
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/eva02_L_pt_m38m_p16_mmapt.pth')),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1536),
    auxiliary_head=dict(in_channels=1024, channels=1536),
    test_cfg=dict(crop_size=crop_size, stride=(426, 426)))
train_dataloader = dict(batch_size=2)
