"""Draw APT's patch grid over images and count the tokens it keeps.

Each PNG shows the patch layout and, beside it, the scorer's map of the
finest merged scale (dark: little detail, bright: much). Example (the
paper's detection setting, then the gradient scorer in budget mode)::

    python tools/analysis/visualize_patches.py demo/ --canvas 1536 \
        --patch-sizes 16 32 64 128 --thresholds 2 2 0.3 --out outputs/patches
    python tools/analysis/visualize_patches.py demo/ --canvas 1536 \
        --scorer gradient --keep-ratio 0.5 --out outputs/patches_gradient
    python tools/analysis/visualize_patches.py demo/ --canvas 1536 \
        --scorer learned --keep-ratio 0.5 --out outputs/patches_learned \
        --scorer-checkpoint work_dirs/learned_scorer_coco/iter_5000.pth

A folder with unreadable files is processed without them (a warning names
each); progress goes to stderr, so ``--json`` output stays clean.
"""
import argparse
import json
import os
import statistics
import sys

from PIL import Image

from mmapt.apis import ImageReadError
from mmapt.apis.image_folder import ImageFolder
from mmapt.apis.tool_args import (add_image_view_arguments, add_json_argument,
                                  add_patch_arguments, add_scorer_arguments,
                                  add_scorer_checkpoint_argument,
                                  scorer_arguments, tokenizer_and_images)
from mmapt.apis.views import normalise, prepare_view
from mmapt.engine.preflight import InputError, check_writable_dir
from mmapt.tokenizer.learned_scorer import learned_scorer_cfg
from mmapt.visualization.layout_picture import (beside, draw_layout,
                                                with_caption)
from mmapt.visualization.score_picture import tokenizer_score_picture


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_image_view_arguments(parser)
    add_patch_arguments(parser)
    add_scorer_arguments(parser)
    add_scorer_checkpoint_argument(parser, '--checkpoint')
    parser.add_argument(
        '--no-map',
        action='store_true',
        help='draw the layout only, without the score map beside it')
    parser.add_argument('--out', help='folder for the annotated PNGs')
    add_json_argument(parser, per_image=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        options = scorer_arguments(args)
        options['scorer'] = learned_scorer_cfg(options['scorer'],
                                               args.scorer_checkpoint,
                                               args.patch_sizes[1:])
        tokenizer, _ = tokenizer_and_images(args.path, args.patch_sizes,
                                            args.thresholds, args.entropy_bins,
                                            **options)
        if tokenizer.scorer.name == 'importance':
            raise ValueError('the importance scorer needs a map per image, '
                             'which this tool does not read: use the demo '
                             'or a pipeline with LoadImportanceMap')
        if args.out:
            check_writable_dir(args.out, '--out')
    except (ValueError, FileNotFoundError, InputError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    rows = []
    folder = ImageFolder(args.path, desc='visualize_patches')
    for path, raw in folder:
        image = prepare_view(raw, args.canvas, args.crop,
                             tokenizer.largest_patch)
        batch = normalise([image], tokenizer.mean, tokenizer.std)
        try:
            layout = tokenizer(batch)
        except ValueError as err:  # e.g. a budget below this size's minimum
            print(f'error: {path}: {err}', file=sys.stderr)
            return 2
        counts = [
            int((layout.scale_index == s).sum())
            for s in range(tokenizer.num_scales)
        ]
        row = dict(
            image=path,
            tokens=layout.num_tokens,
            baseline_tokens=layout.baseline_tokens,
            keep_ratio=round(float(layout.keep_ratio[0]), 4))
        rows.append(row)
        if args.out:
            caption = (
                f'{row["tokens"]}/{row["baseline_tokens"]} tokens '
                f'(keep {row["keep_ratio"]:.1%}); per patch size: ' +
                ', '.join(f'{p}px {n}'
                          for p, n in zip(tokenizer.patch_sizes, counts)))
            name = os.path.splitext(os.path.basename(path))[0] + '_patches.png'
            picture = draw_layout(image, layout, tokenizer.patch_size, caption)
            if not args.no_map and tokenizer.num_scales > 1:
                heat, heat_caption = tokenizer_score_picture(tokenizer, batch)
                picture = beside(
                    picture, with_caption(Image.fromarray(heat), heat_caption))
            picture.save(os.path.join(args.out, name))
        if args.json:
            print(json.dumps(row), flush=True)
    try:
        folder.check_some_read()
    except ImageReadError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if folder.skipped:
        print(f'warning: {folder.summary()}', file=sys.stderr)
    if not args.json:
        print_table(rows, tokenizer)
    return 0


def print_table(rows, tokenizer) -> None:
    print(f'{tokenizer}')
    print(f'{"image":<40} {"tokens":>8} {"baseline":>9} {"keep":>7}')
    for row in rows:
        print(f'{os.path.basename(row["image"])[:40]:<40} {row["tokens"]:>8} '
              f'{row["baseline_tokens"]:>9} {row["keep_ratio"]:>7.3f}')
    ratios = [row['keep_ratio'] for row in rows]
    if not ratios:
        return
    print(f'{"mean":<40} {"":>8} {"":>9} {statistics.mean(ratios):>7.3f}')
    print(f'{"median":<40} {"":>8} {"":>9} {statistics.median(ratios):>7.3f}')


if __name__ == '__main__':
    sys.exit(main())
