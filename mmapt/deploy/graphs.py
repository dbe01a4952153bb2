"""The modules a deployment exports: one forward per ONNX graph.

* :class:`FeatureGraph`: backbone (+ neck) of a detector config, features
  out; an APT backbone runs its static-shape forward at one pack size.
* :class:`SegmentorGraph`: a whole mmseg segmentor in tensor mode (the
  decode head's logits), for one crop size.
* :class:`TokenCountGraph`: the APT tokenizer alone, the packed token count
  of a batch out; the runtime picks the bucket from it.
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor, nn


def apt_adapter(backbone: nn.Module) -> Optional[nn.Module]:
    """The backbone's ``APTAdapter`` (None for a plain backbone)."""
    return getattr(backbone, 'apt', None)


@contextmanager
def fixed_pack_size(backbone: nn.Module,
                    pack_size: Optional[int]) -> Iterator[None]:
    """Inside the block an APT ``backbone`` runs its static-shape forward at
    ``pack_size`` tokens; a plain backbone (``pack_size`` None) as it is."""
    adapter = apt_adapter(backbone)
    if adapter is None:
        if pack_size is not None:
            raise ValueError(f'pack_size={pack_size} given for a plain '
                             f'{type(backbone).__name__}: buckets are for APT '
                             'backbones only; drop --bucket')
        yield
        return
    if pack_size is None:
        raise ValueError('an APT backbone exports at one pack size per graph: '
                         'give a bucket (--bucket N)')
    saved = adapter.pack_size
    adapter.pack_size = int(pack_size)
    try:
        yield
    finally:
        adapter.pack_size = saved


class FeatureGraph(nn.Module):
    """Backbone and neck: a normalised (B, 3, H, W) batch -> feature maps.

    Args:
        backbone (nn.Module): An ``EVA02`` / ``ViT`` or APT backbone.
        neck (nn.Module, optional): The detector's neck (e.g. ``SimpleFPN``);
            None: the backbone's maps are the outputs.
    """

    def __init__(self,
                 backbone: nn.Module,
                 neck: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)


class SegmentorGraph(nn.Module):
    """An mmseg ``EncoderDecoder`` in tensor mode: normalised (B, 3, H, W)
    -> the decode head's logits (B, classes, H / 4, W / 4), as
    ``segmentor(x, mode='tensor')`` returns them (no resize, no slide)."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: Tensor) -> Tensor:
        return self.segmentor._forward(x)

    @property
    def backbone(self) -> nn.Module:
        return self.segmentor.backbone


class TokenCountGraph(nn.Module):
    """The packed tokens (prefix tokens included) an APT backbone's exact
    packing gives a normalised batch: the number the library's bucket choice
    (``select_pack_size``) compares with the buckets. Output: int64 (1, ).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        adapter = apt_adapter(backbone)
        if adapter is None:
            raise ValueError(f'{type(backbone).__name__} is not an APT '
                             'backbone: it has no token count to export')
        self.tokenizer = adapter.tokenizer

    def forward(self, x: Tensor) -> Tensor:
        masks = self.tokenizer.choose_patches(x)[0]
        total = self.tokenizer.packed_total(masks)
        return total.to(torch.int64).reshape(1)
