"""The tree of ``If`` nodes that runs one leaf of many, and where it divides its ranges.

Leaves are in index order, so one comparison of the selector with a split
point picks a side. A leaf's weights and value infos travel into the branch
that runs it. What a range of leaves returns, and how a branch fills the
outputs of the leaves it does not run, is the layout's (``IfTree`` subclasses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from .. import naming
from .nodes import Leaf, Out, constant, symbolic

# Beyond this many leaves the tree stays balanced: the search below takes cubic time.
_MAX_SEARCHED = 64


class IfTree:
    """Nodes that run leaf ``selector`` (an int64 [1] value) of ``leaves``.

    Args:
        leaves: What each leaf runs, in selector order.
        selector: The value compared with each split point.
        splits: Where each range (lo, hi) divides (``cost_aware_splits``); None for the balanced tree.
    """

    def __init__(self, leaves: Sequence[Leaf], selector: str, splits: dict[tuple[int, int], int] | None = None):
        self.leaves, self.selector, self.splits = leaves, selector, splits

    def outputs(self, lo: int, hi: int) -> list[Out]:
        """What the subtree over leaves lo..hi returns."""
        raise NotImplementedError

    def fill(self, lo: int, hi: int, a: int, b: int, tag: str, produced: list[str]) -> tuple[list[str], list]:
        """A branch of range lo..hi runs a..b, which makes ``produced``: the names it returns, in the
        order of ``outputs(lo, hi)``, and the nodes that make the ones a..b does not."""
        return produced, []

    def nodes(self, tag: str, top: list[str]) -> list[onnx.NodeProto]:
        """The whole tree, its values named after ``tag``, its outputs named ``top``."""
        graph = onnx.GraphProto()
        self._fill(graph, 0, len(self.leaves), tag, top)
        return list(graph.node)

    def _fill(self, graph: onnx.GraphProto, lo: int, hi: int, tag: str, top: list[str]) -> None:
        """Append to ``graph`` the nodes that run leaves lo..hi. Each branch is built where it stays, inside
        its ``If``: protobuf copies what a graph is given, so a subtree handed up as nodes would be copied
        once per level above it (N log N; a fifth of a 128-model build)."""
        mid = self.splits[lo, hi] if self.splits else (lo + hi) // 2
        split, cond = naming.branch(tag, "split"), naming.branch(tag, "cond")
        outs = self.outputs(lo, hi)
        graph.node.extend([
            constant(split, np.array([mid], np.int64)),
            helper.make_node("Less", [self.selector, split], [cond], name=naming.node(cond, "less")),
        ])
        node = graph.node.add()
        node.CopyFrom(helper.make_node("If", [cond], top, name=naming.branch(tag, "if")))
        branches = {}
        for side in ("else", "then"):  # the attributes in helper.make_node's order, by name
            attribute = node.attribute.add()
            attribute.name, attribute.type = f"{side}_branch", onnx.AttributeProto.GRAPH
            branches[side] = attribute.g
        for side, (a, b) in (("then", (lo, mid)), ("else", (mid, hi))):
            sub, branch = f"{tag}.{side}", branches[side]
            branch.name = sub
            if b - a == 1:
                leaf = self.leaves[a]
                branch.node.extend(leaf.nodes)
                branch.initializer.extend(leaf.initializers)
                branch.value_info.extend(leaf.value_info)
                produced = leaf.outputs
            else:
                produced = [naming.at(o.name, sub) for o in self.outputs(a, b)]
                self._fill(branch, a, b, sub, produced)
            names, made = self.fill(lo, hi, a, b, sub, produced)
            branch.node.extend(made)
            branch.output.extend(symbolic(n, o) for n, o in zip(names, outs))


def cost_aware_splits(costs: Sequence[float]) -> dict[tuple[int, int], int] | None:
    """Where the tree over leaves 0..n divides each range it has, or None for the balanced tree.

    Each ``If`` level costs a request a few microseconds, which matters in
    proportion to the model's own time. The tree kept is the alphabetic one
    (leaves in index order, so one comparison with the index picks a side)
    that minimises the sum over leaves of depth / cost: cheap models sit nearer
    the root. Equal costs give the balanced tree (ties split in the middle).
    """
    n = len(costs)
    if n < 3 or n > _MAX_SEARCHED or len(set(costs)) == 1:
        return None
    weight = [0.0]
    for c in costs:
        weight.append(weight[-1] + 1.0 / max(c, 1.0))
    best: dict[tuple[int, int], float] = {(i, i + 1): 0.0 for i in range(n)}
    splits: dict[tuple[int, int], int] = {}
    for length in range(2, n + 1):
        for lo in range(n - length + 1):
            hi, mid = lo + length, lo + length // 2
            totals = {s: best[lo, s] + best[s, hi] for s in range(lo + 1, hi)}
            least = min(totals.values())
            split = min((s for s, t in totals.items() if t <= least * (1 + 1e-9)), key=lambda s: (abs(s - mid), s))
            best[lo, hi] = totals[split] + weight[hi] - weight[lo]
            splits[lo, hi] = split
    return splits


def leaf_graphs(graph: onnx.GraphProto, tag: str = "root") -> list[onnx.GraphProto]:
    """The branches of the tree at ``tag`` in ``graph`` that run leaves, in leaf order: the graphs themselves,
    to edit in place. Empty when ``graph`` holds no such tree (one leaf only, written in the main graph)."""
    node = next((n for n in graph.node if n.op_type == "If" and n.name == naming.branch(tag, "if")), None)
    if node is None:
        return []
    branches = {a.name: a.g for a in node.attribute}
    found = []
    for side in ("then", "else"):
        branch = branches[f"{side}_branch"]
        found += leaf_graphs(branch, branch.name) or [branch]
    return found
