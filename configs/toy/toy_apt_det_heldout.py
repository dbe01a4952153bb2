# The toy APT detector tested on a second, larger held-out set: 320 images
# drawn with another seed (train 0, val 1, this set 101), seen by neither the
# detector nor any scorer; for comparisons whose differences the 64 val
# images cannot resolve (docs/scorers_eval.md, "A larger held-out set").
#   python tools/misc/make_toy_coco.py data/toy_coco_heldout --num-train 0 \
#       --num-val 320 --seed 100
_base_ = ['./toy_apt_det.py']

heldout_root = 'data/toy_coco_heldout/'
test_dataloader = dict(dataset=dict(data_root=heldout_root))
test_evaluator = dict(ann_file=heldout_root +
                      'annotations/instances_val2017.json')
