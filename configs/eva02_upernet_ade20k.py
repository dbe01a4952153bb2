# Baseline: plain EVA-02-B + UperNet on ADE20K, 512 x 512, 60k iterations at
# batch 32 (8 GPUs x 4), the official EVA-02 recipe. The architecture of the
# released eva02_B_ade_seg_upernet_sz512.pth (UPerHead 768 channels, FCN aux
# 256); released mIoU 55.25 (single scale), see docs/reproduce.md.
_base_ = [
    './_base_/models/upernet_eva02.py',
    './_base_/datasets/ade20k_512.py',
    './_base_/seg_default_runtime.py',
    './_base_/schedules/ade20k_60k.py',
]
