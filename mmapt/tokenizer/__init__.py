"""Multi-scale patch selection (scorers, thresholds or a token budget),
packing and unpacking."""
from .budget import budget_patches, min_tokens, resolve_budget
from .entropy import entropy_maps, images_to_gray, patch_entropy
from .layout import PatchLayout, build_layout, select_patches
from .learned_scorer import LearnedScorer
from .scorers import (ContrastScorer, EntropyScorer, GradientScorer,
                      ImportanceScorer, PatchScorer, build_scorer,
                      check_importance, scorer_names)
from .tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchTokenizer,
                        check_thresholds)

__all__ = [
    'entropy_maps', 'images_to_gray', 'patch_entropy', 'PatchLayout',
    'build_layout', 'select_patches', 'PatchTokenizer', 'check_thresholds',
    'IMAGENET_MEAN', 'IMAGENET_STD', 'budget_patches', 'min_tokens',
    'resolve_budget', 'PatchScorer', 'EntropyScorer', 'ContrastScorer',
    'GradientScorer', 'ImportanceScorer', 'build_scorer', 'check_importance',
    'scorer_names', 'LearnedScorer'
]
