"""ONNX export of a backbone through ``torch.onnx.export(dynamo=True)``.

APT backbones export only in their static-shape mode (``pack_size`` set):
then every shape is fixed by the input size, and one ONNX graph runs any
image of that size. Plain backbones (``EVA02``, ``ViT``) have static shapes
anyway. Whole configs export through :mod:`mmapt.deploy.export`; tested:
a tiny APT-EVA02 detector config runs in onnxruntime (CPU) and matches
eager to 1e-4 on photographs of different token counts in every bucket
(``tests/test_deploy/test_deploy_runtime.py``).

Four gaps of torch 2.14's ONNX converter are filled here, and one of its
translations is replaced for speed, so the export needs nothing from the
model code:

* ``aten.nonzero_static`` (the static-shape packing) has no ONNX
  translation: written as ``NonZero``, padded with ``fill_value`` and cut
  to ``size``;
* ``aten.searchsorted`` (the token of every slot) has none either: written
  as a count of ``sorted <= value`` (``right=True``) or ``<`` (left);
* ``aten.sort`` (``StaticPlan`` sorts its groups by length with a stable
  argsort) has none either: written as ``TopK`` over the whole axis, which
  ONNX defines to put equal values in index order, ascending or
  descending, i.e. a stable sort;
* ``index_put`` with int32 indices becomes a ``ScatterND`` whose indices
  stay int32, which ONNX requires to be int64 (onnxruntime refuses the
  model): the indices are cast after export.
* ``aten.scaled_dot_product_attention`` with a boolean key mask (static
  mode's capacity classes and padded windows) is translated by the
  converter as scores + additive mask, softmax, then ``IsNaN`` / ``Where``
  over the whole (groups, heads, L, L) score tensor: three extra passes
  over it, which made the APT graph slower in ONNX Runtime than the plain
  one. Here the key mask rides in the score product instead: the queries
  get one more channel of ones, the keys one channel holding 0 (key kept)
  or -inf (key masked), so ``MatMul`` yields the masked scores directly
  (one channel more than the head size, no pass over the scores); a group
  with no key at all gives zeros, as torch does, through a ``Where`` on
  the (groups, 1, 1, 1) output scale. Other masks keep a ``Where`` on the
  scores.

Needs ``onnx``, ``onnxscript`` and (to run the result) ``onnxruntime``.
"""
import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn


def _translations() -> Dict[Any, Any]:
    """ONNX translations of the aten ops the converter lacks."""
    from onnxscript import opset18 as op

    def nonzero_static(self, size: int, fill_value: int = -1):
        found = op.Transpose(op.NonZero(self), perm=[1, 0])  # (n, rank)
        pads = op.Constant(value_ints=[0, 0, size, 0])  # rows at the end
        padded = op.Pad(found, pads, op.Constant(value_int=fill_value))
        return op.Slice(padded, op.Constant(value_ints=[0]),
                        op.Constant(value_ints=[size]),
                        op.Constant(value_ints=[0]))

    def searchsorted(sorted_sequence,
                     self,
                     out_int32: bool = False,
                     right: bool = False,
                     side=None,
                     sorter=None):
        # 1-D sorted_sequence: the index is how many entries come before.
        values = op.Unsqueeze(self, op.Constant(value_ints=[-1]))
        before = op.LessOrEqual(sorted_sequence, values) if right \
            else op.Less(sorted_sequence, values)
        count = op.ReduceSum(
            op.Cast(before, to=7), op.Constant(value_ints=[-1]), keepdims=0)
        return op.Cast(count, to=6) if out_int32 else count

    def sort(self, dim: int = -1, descending: bool = False, stable=None):
        # TopK over the whole axis: ONNX breaks ties by the lower index
        # first, ascending or descending, which is what a stable sort does.
        length = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]))
        values, indices = op.TopK(
            self, length, axis=dim, largest=int(descending), sorted=1)
        return values, indices

    def sort_stable(self,
                    stable=None,
                    dim: int = -1,
                    descending: bool = False):
        return sort(self, dim, descending)

    return {
        torch.ops.aten.scaled_dot_product_attention.default: _attention,
        torch.ops.aten.sort.default: sort,
        torch.ops.aten.sort.stable: sort_stable,
        torch.ops.aten.nonzero_static.default: nonzero_static,
        torch.ops.aten.searchsorted.Tensor: searchsorted,
    }


def _attention(query,
               key,
               value,
               attn_mask=None,
               dropout_p: float = 0.0,
               is_causal: bool = False,
               scale: Optional[float] = None,
               enable_gqa: bool = False):
    """``aten.scaled_dot_product_attention`` at inference, 4-D inputs."""
    from onnxscript import ir
    from onnxscript import opset18 as op
    if dropout_p or is_causal or enable_gqa:
        raise ValueError(
            'the ONNX export translates scaled_dot_product_attention without '
            'dropout, is_causal or enable_gqa (mmapt backbones use none at '
            'inference): export the model in eval mode')

    def scalar(value: float):
        return op.Constant(value=ir.tensor(np.array(value, np.float32)))

    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    query = op.Mul(query, scalar(scale))
    mask_shape = None if attn_mask is None else attn_mask.shape
    key_mask = attn_mask is not None and attn_mask.dtype == ir.DataType.BOOL \
        and len(mask_shape) == 4 and mask_shape[-2] == 1
    if key_mask:
        # (G|1, 1, 1, L) -> a key channel (G, heads, L, 1): 0 kept, -inf not
        bias = op.Where(attn_mask, scalar(0.0), scalar(-math.inf))
        one = op.Constant(value_ints=[1])
        bias = op.Expand(
            op.Transpose(bias, perm=[0, 1, 3, 2]),
            op.Concat(op.Shape(key, start=0, end=3), one, axis=0))
        ones = op.Expand(
            scalar(1.0),
            op.Concat(op.Shape(query, start=0, end=3), one, axis=0))
        query = op.Concat(query, ones, axis=-1)
        key = op.Concat(key, bias, axis=-1)
    scores = op.MatMul(query, op.Transpose(key, perm=[0, 1, 3, 2]))
    boolean = attn_mask is not None and attn_mask.dtype == ir.DataType.BOOL
    if boolean and not key_mask:
        scores = op.Where(attn_mask, scores, scalar(-math.inf))
    elif attn_mask is not None and not boolean:
        scores = op.Add(scores, attn_mask)
    out = op.MatMul(op.Softmax(scores, axis=-1), value)
    if key_mask:  # a group without keys: zeros, not NaN
        kept = op.ReduceMax(
            op.Cast(attn_mask, to=ir.DataType.FLOAT),
            op.Constant(value_ints=[-1]),
            keepdims=1)
        out = op.Where(op.Cast(kept, to=ir.DataType.BOOL), out, scalar(0.0))
    elif boolean:
        out = op.Where(op.IsNaN(out), scalar(0.0), out)
    return out


def _int64_scatter_indices(model) -> int:
    """Cast int32 indices of ``ScatterND`` / ``GatherND`` to int64 in an
    ``onnx.ModelProto``, in place; returns how many were cast."""
    import onnx
    from onnx import TensorProto, helper
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dtypes = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.value_info, *inferred.input, *inferred.output]
    }
    dtypes.update((t.name, t.data_type) for t in model.graph.initializer)
    nodes, cast = [], 0
    for node in model.graph.node:
        if node.op_type in ('ScatterND', 'GatherND') and \
                dtypes.get(node.input[1]) == TensorProto.INT32:
            cast += 1
            name = f'{node.input[1]}_int64_{cast}'
            nodes.append(
                helper.make_node(
                    'Cast', [node.input[1]], [name], to=TensorProto.INT64))
            node.input[1] = name
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return cast


def export_onnx(backbone: nn.Module,
                example: Tensor,
                path: str,
                opset_version: int = 18,
                input_names: Optional[List[str]] = None,
                output_names: Optional[List[str]] = None) -> str:
    """Export ``backbone`` for inputs shaped like ``example`` to ``path``.

    Args:
        backbone (nn.Module): An ``EVA02`` / ``ViT``, or an APT backbone in
            its static-shape mode (``pack_size`` one int), or a module
            holding one (:mod:`mmapt.deploy.graphs`); put in eval mode.
        example (Tensor): (B, 3, H, W) input; the graph takes this shape
            only.
        path (str): Where to write the ``.onnx`` file.
        opset_version (int): ONNX opset, 18 or newer. Defaults to 18.
        input_names (list[str], optional): Name of the graph's input.
        output_names (list[str], optional): Names of its outputs.

    Returns:
        str: ``path``. The graph's outputs are the backbone's maps, in
        ``out_indices`` order.
    """
    if opset_version < 18:
        raise ValueError(f'opset_version must be >= 18 (the dynamo '
                         f'exporter), got {opset_version}')
    for module in backbone.modules():
        apt = getattr(module, 'apt', None)
        if apt is not None and not isinstance(apt.pack_size, int):
            raise ValueError(
                'an APT backbone exports only in its static-shape mode at one '
                f'size (pack_size is {apt.pack_size!r}): set '
                'backbone.apt.pack_size (or pack_size=... in the config) to '
                'one packed length; export one graph per bucket '
                '(mmapt.deploy.export_deployment)')
    import onnx
    backbone.eval()
    with torch.no_grad():
        program = torch.onnx.export(
            backbone, (example, ),
            dynamo=True,
            opset_version=opset_version,
            input_names=input_names,
            output_names=output_names,
            custom_translation_table=_translations())
    model = program.model_proto
    _int64_scatter_indices(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
