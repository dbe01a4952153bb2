# Baseline: plain EVA-02-L + UperNet on ADE20K, 512 x 512 (official EVA-02
# recipe: taps 7, 11, 15, 23; AdamW lr 4e-5, layer decay 0.9; 80k iterations
# at batch 16 = 8 GPUs x 2). The architecture of the released
# eva02_L_ade_seg_upernet_sz512.pth (UPerHead 1024 channels, FCN aux 256).
# Released mIoU 59.77 (single scale).
_base_ = [
    './_base_/models/upernet_eva02.py',
    './_base_/datasets/ade20k_512.py',
    './_base_/seg_default_runtime.py',
    './_base_/schedules/ade20k_80k.py',
]
model = dict(
    backbone=dict(
        arch='large',
        out_indices=(7, 11, 15, 23),
        # The recipe gives no drop path for EVA-02-L UperNet; the base
        # model's 0.15 is kept.
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/eva02_L_pt_m38m_p16_mmapt.pth')),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))
train_dataloader = dict(batch_size=2)
