# The toy APT segmentor tested on a second, larger held-out set: 200 scenes
# drawn with another seed (seed 100; the training and val scenes use seed
# 0), seen by neither the segmentor nor any scorer (docs/scorers_eval.md,
# "A larger held-out set").
#   python tools/misc/make_toy_ade.py data/toy_ade_heldout --num-train 0 \
#       --num-val 200 --seed 100
_base_ = ['./toy_apt_seg.py']

test_dataloader = dict(dataset=dict(data_root='data/toy_ade_heldout'))
