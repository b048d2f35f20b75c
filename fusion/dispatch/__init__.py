"""The dispatch structure: N model graphs behind a tree of ``If`` operators chosen by ``index``.

Two layouts share the tree (``tree``) and differ in the interface:
- ``public`` is what ``fuse`` returns and ``build`` writes as the fused ONNX:
  PopRT's interface, every model's tensors under their anchor names.
- ``packed`` is what the compiler compiles: every model reads and writes a
  few *slots* shared by all, so a request's cost does not grow with the
  number of models, and models that share computation (``sharing``) run it once.
"""

from .packed import packed_graph
from .public import public_graph

__all__ = ["packed_graph", "public_graph"]
