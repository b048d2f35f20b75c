"""Runner: load an artifact once, then execute any of its subgraphs by request.

Switching subgraphs never reloads anything: the whole fused executable is one
backend session, and a request only changes the ``index`` fed to it.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metadata as md
from .artifact import Artifact, read_artifact
from .backends import SessionOptions, Weight, resolve_target
from .config import RuntimeConfig
from .display import source_label
from .dtypes import numpy_from_popef
from .errors import ArtifactError, BackendError, ExecutionError
from .popef import release_pages
from .signing import public_key
from .tensors import mismatch

log = logging.getLogger(__name__)

# Request signatures whose subgraph is remembered; a workload with more is still served, unremembered.
_CACHE_LIMIT = 1024


@dataclass(frozen=True)
class TensorDescriptor:
    """An input or output of the executable, as PopRT's runner describes it.

    ``shape`` has -1 where a dimension is set at run time; ``size_in_bytes`` is
    then -1 too. ``subgraph`` is the owning subgraph, None for ``index``.
    """

    name: str
    shape: tuple[int, ...]
    data_type: str
    size_in_bytes: int
    popef_contains_tensor_data: bool
    subgraph: int | None

    def numpy_data_type(self) -> np.dtype:
        """The NumPy dtype of this tensor."""
        return numpy_from_popef(self.data_type)


def weights(artifact: Artifact) -> list[Weight]:
    """The weights the metadata lists, as arrays over the artifact's tensor blobs (no copy); the reader has
    checked that each lies inside its blob and that its shape fits its size."""
    out = []
    for ref in artifact.metadata.tensor_data:
        dtype = numpy_from_popef(ref.tensor_info.data_type)
        count = math.prod(ref.tensor_info.shape)
        data = np.frombuffer(artifact.tensors[ref.blob], dtype, count, ref.offset).reshape(ref.tensor_info.shape)
        # The writer aligns tensor blobs; an array that is not aligned anyway is copied rather than refused.
        out.append(Weight(ref.name, ref.blob, np.require(data, requirements="A"), ref.offset))
    return out


class ExecuteFuture:
    """The pending result of ``Runner.execute_async``."""

    def __init__(self, future: concurrent.futures.Future):
        self._future = future

    def wait(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Block until the request finishes; returns its outputs or raises its error."""
        return self._future.result(timeout)

    def done(self) -> bool:
        """True once the request has finished."""
        return self._future.done()


def check_artifact(source: str | os.PathLike | bytes, config: RuntimeConfig | None = None) -> Artifact:
    """Read and verify an artifact, and check that this machine's backend can open it (the version and
    machine features it was compiled for), without opening it: what can be refused before memory is spent on it.

    Raises:
        ArtifactError: as ``Runner`` (``SignatureError`` when ``config.trusted_keys`` are set and none signed it).
        BackendError: the artifact's target has no backend here.
    """
    config = config or RuntimeConfig()
    artifact = read_artifact(source, [public_key(key) for key in config.trusted_keys])
    backend, device = resolve_target(artifact.metadata.target)
    built = artifact.metadata.backend
    name, version, features = backend.name, backend.version(), backend.features(device)
    if (built.name, built.version, built.features) == (name, version, features):
        return artifact
    label = source_label(source)
    if (built.name, built.version) != (name, version):
        problem = f"{label} was compiled by {built.name} {built.version}, but this machine has {name} {version}"
    elif built.features.startswith(features + " "):
        problem = (f"{label} was compiled by an earlier popfuse for one CPU's instruction sets [{built.features}]; "
                   f"artifacts now record [{features}] and open on any CPU of it")
    else:
        problem = f"{label} was compiled for a machine with [{built.features}], but this machine has [{features}]"
    if config.check_package_hash:
        raise ArtifactError(
            f"{problem}. Rebuild it here with `popfuse build CONFIG.yaml`, or set "
            "RuntimeConfig(check_package_hash=False) to load it anyway"
        )
    log.warning("%s; loading anyway because check_package_hash is False", problem)
    return artifact


class Runner:
    """Executes the subgraphs of one artifact. PopRT's ``ModelRunner``.

    Args:
        source: Path to an ``executable.popef``, or its bytes.
        config: Runtime settings; None means ``RuntimeConfig()``.
        checked: ``source``'s contents as ``check_artifact`` returned them under the same ``config``, so
            that they are not read and checked again; None reads them.

    Raises:
        ArtifactError: the artifact is unreadable, its records disagree, it was
            compiled by another backend version while ``check_package_hash`` is
            set, or (``SignatureError``) it is not signed by one of
            ``trusted_keys`` when they are set.
        BackendError: the backend cannot load the executable here.
    """

    def __init__(self, source: str | os.PathLike | bytes, config: RuntimeConfig | None = None,
                 checked: Artifact | None = None):
        self.config = config or RuntimeConfig()
        artifact = checked or check_artifact(source, self.config)
        #: Who signed the artifact (verified against ``trusted_keys`` when they are set), or None.
        self.signature = artifact.signature
        self.metadata: md.Metadata = artifact.metadata
        self.fusion_map: md.FusionMap = artifact.fusion_map
        backend, device = resolve_target(artifact.metadata.target)
        # The weights are views of the artifact's mapping, used in place for the session's life.
        cache = self.config.executable_cache
        options = SessionOptions(self.config.intra_op_num_threads, executable=True,
                                 cache_key=artifact.content_id or None,
                                 cache_dir=None if cache is None else os.fspath(cache))
        self._session = backend.open(artifact.executable, weights(artifact), device, options)
        release_pages(*artifact.tensors.values())
        self._anchors = {a.name: a for a in self.metadata.anchors}
        self._owner = self.fusion_map.anchors()
        self._index_name = self.fusion_map.index_anchor
        self._index_values = [np.array([s.index], np.uint32) for s in self.subgraphs]
        self._dtypes = {a.name: numpy_from_popef(a.tensor_info.data_type) for a in self.metadata.anchors}
        slots = self.metadata.slots
        unused = {name: np.empty(0, numpy_from_popef(t)) for t, names in slots.inputs.items() for name in names}
        # Per subgraph: which slot each input is fed to, which slots return its outputs, and the feeds
        # every request starts from (the index; empty arrays in the slots it leaves unused).
        self._slot_of: list[list[tuple[str, str]]] = []
        self._fetch: list[list[str]] = []
        self._base_feeds: list[dict[str, np.ndarray]] = []
        for sub in self.subgraphs:
            self._slot_of.append(list(zip(sub.inputs, self._slot_names(sub.inputs, slots.inputs))))
            self._fetch.append(self._slot_names(sub.outputs, slots.outputs))
            self._base_feeds.append({**unused, self._index_name: self._index_values[sub.index]})
        # Subgraph of each request signature already checked by name (bounded).
        self._resolved: dict[tuple, int] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _slot_names(self, anchors: tuple[str, ...], slots: dict[str, tuple[str, ...]]) -> list[str]:
        """The slot of each anchor: its type's k-th slot for the k-th anchor of that type (the reader has
        checked that there are enough)."""
        seen: dict[str, int] = {}
        out = []
        for name in anchors:
            t = self._anchors[name].tensor_info.data_type
            k = seen.get(t, 0)
            seen[t] = k + 1
            out.append(slots[t][k])
        return out

    @property
    def subgraphs(self) -> tuple[md.Subgraph, ...]:
        """The fused models, in index order."""
        return self.fusion_map.subgraphs

    def get_execute_inputs(self) -> list[TensorDescriptor]:
        """Descriptors of every input anchor, ``index`` included."""
        return [self._describe(a) for a in self.metadata.anchors if a.type == md.INPUT]

    def get_execute_outputs(self) -> list[TensorDescriptor]:
        """Descriptors of every output anchor."""
        return [self._describe(a) for a in self.metadata.anchors if a.type == md.OUTPUT]

    def _describe(self, anchor: md.Anchor) -> TensorDescriptor:
        shape = anchor.tensor_info.shape
        dtype = numpy_from_popef(anchor.tensor_info.data_type)
        size = -1 if any(d < 0 for d in shape) else math.prod(shape) * dtype.itemsize
        return TensorDescriptor(
            name=anchor.name,
            shape=shape,
            data_type=anchor.tensor_info.data_type,
            size_in_bytes=size,
            popef_contains_tensor_data=False,
            subgraph=self._owner.get(anchor.name),
        )

    def execute(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one subgraph.

        Args:
            inputs: Anchor name → array, for the inputs of one subgraph; ``index``
                may be included, and is inferred from the names otherwise.
            outputs: Anchor name → pre-allocated array, written in place. None
                returns every output of the subgraph in new arrays.

        Returns:
            Output name → array (the caller's arrays when ``outputs`` was given).

        Raises:
            ExecutionError: an unknown name, tensors of two subgraphs, a missing
                input, a wrong dtype or shape, or a failure inside the backend.
        """
        index = self._select(inputs, outputs)
        feeds = self._base_feeds[index].copy()
        for name, slot in self._slot_of[index]:
            array = inputs[name]
            feeds[slot] = array if isinstance(array, np.ndarray) else np.asarray(array)
        try:
            arrays = self._session.run(self._fetch[index], feeds)
        except ExecutionError as e:
            self._explain(index, inputs)
            raise ExecutionError(f"{self._which(index)} rejected the request: {self._public(index, e)}") from e
        except BackendError as e:
            raise BackendError(f"{self._which(index)} failed in the backend: {self._public(index, e)}") from e
        results = dict(zip(self.subgraphs[index].outputs, arrays))
        if outputs is None:
            return results
        for name, buffer in outputs.items():
            _write_into(name, buffer, results[name])
        return dict(outputs)

    def _explain(self, index: int, inputs: Mapping[str, Any]) -> None:
        """After the backend refused a request: raise the precise error when an input has the wrong dtype
        or shape (unchecked with ``validate_io_params=False``)."""
        for name in self.subgraphs[index].inputs:
            self._check_tensor(name, np.asarray(inputs[name]), "input")

    def _which(self, index: int) -> str:
        return f"subgraph {index} ({self.subgraphs[index].name!r})"

    def _public(self, index: int, error: Exception) -> str:
        """The backend's message with the executable's slot names replaced by the request's tensor names."""
        message = str(error)
        for anchor, slot in self._slot_of[index]:
            message = message.replace(slot, anchor)
        for anchor, slot in zip(self.subgraphs[index].outputs, self._fetch[index]):
            message = message.replace(slot, anchor)
        return message

    def execute_async(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None = None,
    ) -> ExecuteFuture:
        """Start ``execute`` on the runner's thread pool; ``.wait()`` on the result."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="popfuse-runner")
        return ExecuteFuture(self._pool.submit(self.execute, inputs, outputs))

    def close(self) -> None:
        """Finish pending asynchronous requests and release the thread pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request checks -------------------------------------------------------------

    def _select(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None) -> int:
        """The subgraph a request runs, after checking every name it uses."""
        key = (tuple(inputs), tuple(outputs) if outputs else ())
        index = self._resolved.get(key)
        if index is not None and self._index_name in inputs and self._requested_index(inputs) != index:
            index = None  # the full check below says what disagrees
        if index is None:
            index = self._resolve(inputs, outputs)
            # The names decide the subgraph only when there are names besides the index.
            if len(key[0]) + len(key[1]) > (self._index_name in inputs) and len(self._resolved) < _CACHE_LIMIT:
                self._resolved[key] = index
        if self.config.validate_io_params:
            for name in self.subgraphs[index].inputs:
                self._check_tensor(name, inputs[name], "input")
            for name, array in (outputs or {}).items():
                self._check_tensor(name, array, "output buffer")
        return index

    def _resolve(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None) -> int:
        """The subgraph the names of a request belong to; raises on unknown, mixed or missing names."""
        owners: dict[int, list[str]] = {}
        for name in inputs:
            if name != self._index_name:
                owners.setdefault(self._owner_of(name, md.INPUT), []).append(name)
        for name in outputs or ():
            owners.setdefault(self._owner_of(name, md.OUTPUT), []).append(name)
        if len(owners) > 1:
            parts = "; ".join(
                f"subgraph {k} ({self.subgraphs[k].name!r}): {', '.join(v)}" for k, v in sorted(owners.items())
            )
            raise ExecutionError(f"tensors of more than one subgraph in one request: {parts}")
        index = self._requested_index(inputs)
        if owners:
            (owner,) = owners
            if index is not None and index != owner:
                raise ExecutionError(
                    f"index {index} selects subgraph {index} ({self.subgraphs[index].name!r}), but the "
                    f"tensors {', '.join(owners[owner])} belong to subgraph {owner} ({self.subgraphs[owner].name!r})"
                )
            index = owner
        elif index is None:
            raise ExecutionError(f"the request names no tensor and no {self._index_name!r}; nothing to run")
        sub = self.subgraphs[index]
        missing = [n for n in sub.inputs if n not in inputs]
        if missing:
            raise ExecutionError(
                f"subgraph {index} ({sub.name!r}) needs input(s) {', '.join(missing)}, which the request lacks"
            )
        return index

    def _owner_of(self, name: str, kind: str) -> int:
        anchor = self._anchors.get(name)
        if anchor is None or name == self._index_name:
            known = [a.name for a in self.metadata.anchors if a.type == kind and a.name != self._index_name]
            own = [a for s in self.subgraphs for a in (*s.inputs, *s.outputs) if s.local_name(a) == name]
            close = [k for k in own if k in known] or difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known {kind.lower()}s: {', '.join(known)}"
            raise ExecutionError(f"unknown {kind.lower()} tensor {name!r}{hint}")
        if anchor.type != kind:
            raise ExecutionError(f"{name!r} is an {anchor.type.lower()} of the executable, passed as an {kind.lower()}")
        return self._owner[name]

    def _requested_index(self, inputs: Mapping[str, Any]) -> int | None:
        if self._index_name not in inputs:
            if self.config.validate_io_params and len(self.subgraphs) > 1:
                raise ExecutionError(
                    f"validate_io_params=True needs the {self._index_name!r} input; pass it, or set "
                    "RuntimeConfig(validate_io_params=False) to have it inferred from the tensor names"
                )
            return None
        raw = np.asarray(inputs[self._index_name])
        if raw.size != 1 or raw.dtype.kind not in "iu":
            raise ExecutionError(
                f"{self._index_name!r} must hold one integer (uint32, shape [1]); "
                f"received dtype {raw.dtype}, shape {list(raw.shape)}"
            )
        value = int(raw.reshape(-1)[0])
        if not 0 <= value < len(self.subgraphs):
            raise ExecutionError(
                f"{self._index_name!r} is {value}, out of range: the artifact has "
                f"{len(self.subgraphs)} subgraphs (0..{len(self.subgraphs) - 1})"
            )
        return value

    def _check_tensor(self, name: str, array: Any, role: str) -> None:
        problem = mismatch(array, self._dtypes[name], self._anchors[name].tensor_info.shape)
        if problem:
            raise ExecutionError(f"{role} {name!r}: {problem}")


def _write_into(name: str, buffer: Any, result: np.ndarray) -> None:
    if not isinstance(buffer, np.ndarray):
        raise ExecutionError(f"output buffer {name!r}: expected a numpy array, received {type(buffer).__name__}")
    if buffer.shape != result.shape or buffer.dtype != result.dtype:
        raise ExecutionError(
            f"output buffer {name!r}: the result is {result.dtype} {list(result.shape)}, "
            f"the buffer is {buffer.dtype} {list(buffer.shape)}"
        )
    np.copyto(buffer, result)


ModelRunner = Runner
