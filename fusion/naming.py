"""The names the fused graph uses, in one place: anchors, the index, dispatch nodes, slots and weights.

The public names are PopRT's: model i's tensors are anchors ``graph{i}/<name>``
and an ``index`` input selects the model. The fusion map records, for every
anchor, the model's own name for it, so the runtime and the server read names
from records and never take an anchor apart.

Every other name here is the compiler's own. They only need to be unique and
to never collide with a model's names, which are all namespaced under
``graph{i}/``; a node's name is its first output's name plus a role.
"""

from __future__ import annotations

#: The input that selects the subgraph to run: uint32, shape [1].
INDEX = "index"
#: ``index`` as int64, which ``Less``, ``Equal`` and ``Gather`` take.
INDEX_INT64 = "dispatch/index_int64"
#: In the packed layout, the position of the request's group among the groups (see ``dispatch.sharing``).
GROUP = "dispatch/group"
#: Prefix of the names of the weights the compiler stores once, outside the graph.
WEIGHTS_PREFIX = "weights/"


def namespace(index: int) -> str:
    """The prefix of every name of subgraph ``index``."""
    return f"graph{index}/"


def subgraph_of(name: str) -> int | None:
    """The subgraph a name belongs to: in its namespace (``graph3/conv`` → 3) or leaving its leaf
    (``slot/F32/0@dispatch/model3`` → 3); None for the compiler's other names."""
    space, slash, _ = name.partition("/")
    place = name.rpartition("@")[2]
    for candidate, prefix in ((space if slash else "", "graph"), (place, "dispatch/model")):
        number = candidate.removeprefix(prefix)
        if number != candidate and number.isdigit():
            return int(number)
    return None


def anchor(index: int, name: str) -> str:
    """The public name of model ``index``'s tensor ``name``."""
    return namespace(index) + name


def local_name(index: int, anchor_name: str) -> str:
    """The model's own name of an anchor that ``anchor(index, name)`` made: the compiler records it in
    the fusion map, so that nothing downstream takes anchors apart."""
    prefix = namespace(index)
    if not anchor_name.startswith(prefix):
        raise ValueError(f"{anchor_name!r} is not an anchor of subgraph {index}")
    return anchor_name[len(prefix):]


def node(value: str, role: str) -> str:
    """The name of the node that makes ``value`` in the given role (``const``, ``if``, ``alias`` …)."""
    return f"{value}/{role}"


def model_position(index: int) -> str:
    """The dispatch value holding model ``index``'s position, compared with the index (public layout)."""
    return f"dispatch/model{index}"


def branch(tag: str, part: str) -> str:
    """A value of the dispatch tree at ``tag`` (``split``, ``cond`` …)."""
    return f"dispatch/{tag}/{part}"


def tails(group: int) -> str:
    """The position of a request's tail among the tails of the group whose first model is ``group``."""
    return f"dispatch/group{group}/tail"


def table(selector: str) -> str:
    """The constant table that ``selector`` is gathered from."""
    return f"{selector}/table"


def at(value: str, place: str) -> str:
    """``value`` as it leaves a place of the dispatch tree (a branch's tag, a model's leaf)."""
    return f"{value}@{place}"


def empty(value: str, place: str) -> str:
    """An empty stand-in for ``value`` where the tree returns it without running its model."""
    return f"{value}@{place}:empty"


def input_slot(data_type: str, k: int) -> str:
    """The packed layout's input that carries a model's k-th input of this PopEF data type."""
    return f"slot_in/{data_type}/{k}"


def output_slot(data_type: str, k: int) -> str:
    """The packed layout's output that carries a model's k-th output of this PopEF data type."""
    return f"slot/{data_type}/{k}"


def shared_weight(number: int) -> str:
    """The name of the ``number``-th distinct weight the compiler stores outside the graph."""
    return f"{WEIGHTS_PREFIX}{number}"
