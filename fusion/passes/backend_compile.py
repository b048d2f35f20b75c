"""The compile pass: the backend optimises the packed graph, one leaf of its dispatch tree at a time.

onnxruntime's optimisers take time quadratic in the number of subgraphs of the graph they run on: with
the whole fused graph, the basic level alone took 0.08 s for 16 classifiers and 1.5 s for 64. Each leaf (a
model, or a group of models sharing a prefix) is therefore compiled as a model of its own, whose inputs
are the values the leaf reads from outside it, and put back where it was. Nothing an optimiser does at
this level crosses a leaf's boundary: a leaf reads only the request's slots and index, which no
optimisation can fold, so the result is the graph the whole-graph compile gave, in time linear in N. The
models' local functions go with each leaf; onnxruntime inlines them.
"""

from __future__ import annotations

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from popfuse.runtime.backends import Backend
from popfuse.runtime.errors import BackendError

from .. import naming
from ..dispatch.tree import leaf_graphs
from ..errors import FusionError
from ..graph import copy_model, subgraphs, walk_nodes
from ..pipeline import PassResult

# Values of the main graph that leaves read besides its inputs: the index the tree compares, as int64.
_MADE_IN_THE_MAIN_GRAPH = {name: helper.make_tensor_value_info(name, TensorProto.INT64, [1])
                           for name in (naming.INDEX_INT64, naming.GROUP)}


def backend_compile(model: onnx.ModelProto, backend: Backend, device: str) -> PassResult[None]:
    """``model`` optimised by ``backend`` for ``device``: on the CPU leaf by leaf where its graph holds a
    dispatch tree, else whole.

    Raises:
        BackendError: the backend could not compile a leaf, or returned something that is not ONNX.
        FusionError: a leaf reads a value of the main graph other than its inputs and the index (the layout's
            invariant, which the leaf's inputs as a model of its own are made from).
    """
    out = copy_model(model)
    leaves = leaf_graphs(out.graph)
    known = {**_MADE_IN_THE_MAIN_GRAPH, **{i.name: i for i in out.graph.input}}
    # Off the CPU a backend's compile places copies between host and device at a model's inputs, which a leaf
    # compiled alone would keep inside its branch: there the graph is compiled whole, as it always was.
    if not leaves or device != "cpu":
        return PassResult(_compiled(out, backend, device), True)
    reads = [_outer_reads(leaf) for leaf in leaves]
    for leaf, names in zip(leaves, reads):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise FusionError(f"the leaf {leaf.name!r} of the dispatch tree reads {unknown[0]!r} from outside it; "
                              f"a leaf may read only the graph's inputs and {sorted(_MADE_IN_THE_MAIN_GRAPH)}")
    opsets = {o.domain: o.version for o in out.opset_import}
    functions: dict[tuple[str, str], onnx.FunctionProto] = {}
    for leaf, names in zip(leaves, reads):
        alone = helper.make_model(
            helper.make_graph(list(leaf.node), leaf.name, [known[n] for n in names], list(leaf.output),
                              initializer=list(leaf.initializer), value_info=list(leaf.value_info)),
            opset_imports=list(out.opset_import), ir_version=out.ir_version, functions=list(out.functions),
        )
        try:
            compiled = _compiled(alone, backend, device)
        except BackendError as e:
            found = [*(n.name for n in walk_nodes(leaf.node)), *(o.name for o in leaf.output)]
            models = sorted({i for name in found if (i := naming.subgraph_of(name)) is not None})
            raise BackendError(f"{e} (in the dispatch leaf {leaf.name!r}, subgraphs {models})") from e
        outputs = {o.name for o in leaf.output}
        for field in ("node", "initializer", "value_info"):
            leaf.ClearField(field)
        leaf.node.extend(compiled.graph.node)
        leaf.initializer.extend(compiled.graph.initializer)
        # The leaf's outputs keep the tree's declarations (symbolic dimensions), not the backend's.
        leaf.value_info.extend(v for v in compiled.graph.value_info if v.name not in outputs)
        for o in compiled.opset_import:  # the domains of the nodes the optimisers made (com.microsoft …)
            opsets.setdefault(o.domain, o.version)
        # onnxruntime inlines the model's local functions it can; those it kept are still called.
        functions.update(((f.domain, f.name), f) for f in compiled.functions)
    out.ClearField("functions")
    out.functions.extend(functions.values())
    out.ClearField("opset_import")
    out.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items()))
    return PassResult(out, True)


def _compiled(model: onnx.ModelProto, backend: Backend, device: str) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(backend.compile(model.SerializeToString(), device))
    except DecodeError as e:
        raise BackendError(f"{backend.name} returned an executable that is not ONNX: {e}") from e


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    """The names ``graph``'s nodes (and the graphs they hold) read from outside it, in first-read order."""
    made: set[str] = set()
    reads: dict[str, None] = {}

    def visit(g: onnx.GraphProto) -> None:
        made.update(t.name for t in g.initializer)
        made.update(i.name for i in g.input)
        for node in g.node:
            for name in node.input:
                if name and name not in made:
                    reads.setdefault(name)
            for sub in subgraphs(node):
                visit(sub)
            made.update(node.output)

    visit(graph)
    for output in graph.output:  # a branch may return a value of the enclosing graph as it is
        if output.name not in made:
            reads.setdefault(output.name)
    return [name for name in reads if name not in made]
