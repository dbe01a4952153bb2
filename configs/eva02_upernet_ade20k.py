# Baseline: plain EVA-02-B + UperNet on ADE20K, 512 x 512, 60k iterations at
# batch 32 (8 GPUs x 4). Official EVA-02 recipe (docs/method.md, section 6).
_base_ = [
    './_base_/models/upernet_eva02.py',
    './_base_/datasets/ade20k_512.py',
    './_base_/seg_default_runtime.py',
    './_base_/schedules/ade20k_60k.py',
]
custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)
