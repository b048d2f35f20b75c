"""The pieces both layouts build with: outputs as the tree carries them, leaves, and small nodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import naming
from ..errors import FusionError


@dataclass(frozen=True)
class Out:
    """A value the tree returns: its name, element type and rank (None: undeclared, as a slot's)."""

    name: str
    elem_type: int
    rank: int | None


@dataclass(frozen=True)
class Leaf:
    """What one leaf of the tree runs: its nodes, the outputs they make, and what they read from the branch."""

    nodes: list[onnx.NodeProto]
    outputs: list[str]
    initializers: tuple[TensorProto, ...] = ()
    value_info: tuple[onnx.ValueInfoProto, ...] = ()


def describe_output(info: onnx.ValueInfoProto) -> Out:
    """A model output as the public tree carries it.

    Raises:
        FusionError: the output is not a tensor, or its rank is unknown.
    """
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise FusionError(f"output {info.name!r} is a {kind}; only tensor outputs can be fused")
    tt = info.type.tensor_type
    if not tt.HasField("shape"):
        raise FusionError(
            f"the rank of output {info.name!r} is unknown; set input_shape so shape inference can find it"
        )
    return Out(info.name, tt.elem_type, len(tt.shape.dim))


def symbolic(name: str, out: Out) -> onnx.ValueInfoProto:
    """``out`` declared under ``name`` with symbolic dimensions, so empty stand-ins never disagree with it."""
    if out.rank is None:
        return helper.make_tensor_value_info(name, out.elem_type, None)
    return helper.make_tensor_value_info(name, out.elem_type, [f"{out.name}:{d}" for d in range(out.rank)])


def empty(name: str, out: Out) -> onnx.NodeProto:
    """A node making an empty tensor of ``out``'s type and rank, named ``name``."""
    dtype = helper.tensor_dtype_to_np_dtype(out.elem_type)
    shape = (0,) if out.rank is None else (0,) * out.rank
    return constant(name, np.zeros(shape, dtype))


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A constant beside the node that reads it: a value of an enclosing graph would be an
    implicit input of every ``If`` between them, which onnxruntime gathers on every run."""
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(value), name=naming.node(name, "const")
    )


def cast_index() -> onnx.NodeProto:
    """``index`` (uint32) as the int64 the tree compares."""
    return helper.make_node(
        "Cast", [naming.INDEX], [naming.INDEX_INT64], to=TensorProto.INT64, name=naming.node(naming.INDEX_INT64, "cast")
    )


def index_input() -> onnx.ValueInfoProto:
    """The graph input ``index``: uint32, shape [1]."""
    return helper.make_tensor_value_info(naming.INDEX, TensorProto.UINT32, [1])


def lookup(name: str, table: list[int]) -> list[onnx.NodeProto]:
    """Nodes that look the request's index up in ``table``, giving ``name``."""
    return [
        constant(naming.table(name), np.array(table, np.int64)),
        helper.make_node("Gather", [naming.table(name), naming.INDEX_INT64], [name], axis=0,
                         name=naming.node(name, "gather")),
    ]
