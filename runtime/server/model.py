"""One served model: a subgraph of a fused artifact, under its own tensor names.

Clients see the original input and output names (``x``), not the artifact's
anchors (``graph2/x``); the model checks requests against the anchors' dtypes
and shapes before anything runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..dtypes import kserve_from_numpy, numpy_from_popef
from ..errors import ExecutionError
from ..runner import Runner
from .errors import BadRequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: client name, anchor name, dtype and shape (-1: set per request)."""

    name: str
    anchor: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": kserve_from_numpy(self.dtype), "shape": list(self.shape)}


class SubgraphModel:
    """Subgraph ``index`` of ``runner``'s artifact, served as model ``name``."""

    def __init__(self, artifact: str, runner: Runner, index: int):
        sub = runner.subgraphs[index]
        self.artifact = artifact
        self.name = sub.name
        self.index = index
        self.runner = runner
        anchors = {a.name: a for a in runner.metadata.anchors}

        def spec(anchor: str) -> TensorSpec:
            info = anchors[anchor].tensor_info
            return TensorSpec(anchor.split("/", 1)[1], anchor, numpy_from_popef(info.data_type), info.shape)

        self.inputs = [spec(a) for a in sub.inputs]
        self.outputs = [spec(a) for a in sub.outputs]
        self._inputs = {s.name: s for s in self.inputs}
        self._index_feed = {runner.fusion_map.index_anchor: np.array([index], np.uint32)}

    @property
    def batchable(self) -> bool:
        """Whether requests can be stacked on dimension 0 of every input and output."""
        return all(s.shape and s.shape[0] == -1 for s in (*self.inputs, *self.outputs))

    def metadata(self) -> dict:
        """KServe v2 model metadata."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": f"popfuse_{self.runner.metadata.backend.name}",
            "inputs": [s.metadata() for s in self.inputs],
            "outputs": [s.metadata() for s in self.outputs],
        }

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Raise BadRequestError unless ``inputs`` are exactly this model's, with its dtypes and shapes."""
        for name, array in inputs.items():
            spec = self._inputs.get(name)
            if spec is None:
                raise BadRequestError(
                    f"model {self.name!r} has no input {name!r}; its inputs are {', '.join(self._inputs)}"
                )
            if array.dtype != spec.dtype:
                raise BadRequestError(
                    f"model {self.name!r}, input {name!r}: expected {spec.metadata()['datatype']}, "
                    f"received {kserve_from_numpy(array.dtype)}"
                )
            if len(array.shape) != len(spec.shape) or any(e >= 0 and e != r for e, r in zip(spec.shape, array.shape)):
                raise BadRequestError(
                    f"model {self.name!r}, input {name!r}: expected shape {list(spec.shape)} (-1: any), "
                    f"received {list(array.shape)}"
                )
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise BadRequestError(f"model {self.name!r} needs input(s) {', '.join(missing)}")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the subgraph (blocking); inputs and outputs by client name."""
        feeds = {self._inputs[name].anchor: array for name, array in inputs.items()}
        feeds.update(self._index_feed)
        results = self.runner.execute(feeds)
        return {s.name: results[s.anchor] for s in self.outputs}

    def warm(self) -> None:
        """Run once on zeros (dynamic dimensions 1), so the first request pays no first-run costs."""
        zeros = {s.name: np.zeros([d if d >= 0 else 1 for d in s.shape], s.dtype) for s in self.inputs}
        try:
            self.predict(zeros)
        except ExecutionError as e:
            log.warning("model %r was not warmed: it rejects zeros of its input shapes (%s)", self.name, e)
