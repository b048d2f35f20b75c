"""``build``: a configuration in, the fused ONNX and the ``executable.popef`` out.

YAML → FusionConfig → loaded models → ``fuse`` → compiled executable → artifact.
Each output is written atomically, so a failed build leaves no partial file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from runtime import metadata as md
from runtime.artifact import Artifact, write_artifact
from runtime.atomic import write_atomic
from runtime.backends import resolve_target
from runtime.dtypes import popef_from_onnx
from runtime.dump import human_size
from runtime.errors import BackendError

from .config import FusionConfig, ModelSpec, load_config, parse_config
from .errors import FusionError
from .fuse import Progress, fuse, fusion_records
from .passes.dispatch import INDEX
from .passes.layout import packed_layout
from .passes.opset import used_opsets_only
from .passes.weights import externalize_weights

EXECUTABLE_BLOB = "executable"
WEIGHTS_BLOB = "weights"


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote, and how long each stage took."""

    fused_model_path: Path
    fused_model_bytes: int
    popef_path: Path | None
    artifact_bytes: int | None
    executable_bytes: int | None
    fusion_map: md.FusionMap
    source_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)


def load_model(spec: ModelSpec) -> onnx.ModelProto:
    """Load one model file, with an error that names it when it is missing or not ONNX."""
    try:
        return onnx.load(spec.path)
    except FileNotFoundError:
        raise FusionError(f"model {spec.options.name!r}: file {str(spec.path)!r} not found") from None
    except DecodeError as e:
        raise FusionError(f"model {spec.options.name!r}: {str(spec.path)!r} is not an ONNX model: {e}") from e
    except OSError as e:
        raise FusionError(f"model {spec.options.name!r}: cannot read {str(spec.path)!r}: {e}") from e


def compile_artifact(fused: onnx.ModelProto, target: str, ipu_version: str | None = None) -> Artifact:
    """Compile a fused model for ``target`` and wrap it as an artifact (not yet written).

    The graph is re-laid into the packed layout (``packed_layout``), where models
    that begin with the same nodes over the same weights run them once; the
    backend optimises it, then every large weight leaves the protobuf for the
    ``weights`` tensor blob, identical ones once, those the backend copies when
    it opens the executable last (``externalize_weights``); the metadata lists
    where each one lies.
    """
    anchors, fusion_map = fusion_records(fused)
    backend, device = resolve_target(target)
    packed, groups = packed_layout(fused, fusion_map)

    def slots(values) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for v in values:
            if v.name != INDEX:
                out.setdefault(popef_from_onnx(v.type.tensor_type.elem_type), []).append(v.name)
        return {t: tuple(names) for t, names in out.items()}

    layout = md.SlotLayout(inputs=slots(packed.graph.input), outputs=slots(packed.graph.output))
    try:
        compiled = onnx.load_from_string(backend.compile(packed.SerializeToString(), device))
    except DecodeError as e:
        raise BackendError(f"{backend.name} returned an executable that is not ONNX: {e}") from e
    def copied_at_load(node: onnx.NodeProto, index: int, tensor: onnx.TensorProto) -> bool:
        return backend.copies_at_load(node.domain, node.op_type, index, len(tensor.dims), device)

    compiled, weights = externalize_weights(used_opsets_only(compiled), WEIGHTS_BLOB, copied_at_load=copied_at_load)
    tensor_data = tuple(
        md.TensorData(t.name, md.TensorInfo(t.dims, popef_from_onnx(t.data_type)), WEIGHTS_BLOB, t.offset, t.size)
        for t in weights.tensors
    )
    metadata = md.Metadata(
        anchors=anchors,
        executable=EXECUTABLE_BLOB,
        target=target,
        backend=md.BackendInfo(backend.name, backend.version(), device, backend.features(device)),
        slots=layout,
        ipu_version=ipu_version,
        tensor_data=tensor_data,
    )
    return Artifact(
        metadata=metadata,
        fusion_map=replace(
            fusion_map,
            shared_weights=weights.shared + sum(g.shared_weights for g in groups),
            shared_weight_bytes=weights.shared_bytes + sum(g.shared_bytes for g in groups),
        ),
        executable=compiled.SerializeToString(),
        tensors={WEIGHTS_BLOB: weights.payload} if weights.payload else {},
    )


def build(config: FusionConfig | Mapping | str | os.PathLike, progress: Progress | None = None) -> BuildResult:
    """Run a whole build, as ``popfuse build CONFIG.yaml`` does.

    Args:
        config: A FusionConfig, a mapping with the YAML's keys (paths relative
            to the working folder), or the path of a YAML file.
        progress: Called with a line per stage and per model.

    Raises:
        ConfigError, FusionError, BackendError: naming the file, key or model.
    """
    if isinstance(config, Mapping):
        config = parse_config(config)
    elif not isinstance(config, FusionConfig):
        config = load_config(config)
    say = progress or (lambda line: None)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    models = [load_model(spec) for spec in config.models]
    source_bytes = sum(spec.path.stat().st_size for spec in config.models)
    seconds["load"] = time.perf_counter() - start
    say(f"loaded {len(models)} models ({human_size(source_bytes)}) in {seconds['load']:.2f} s")

    start = time.perf_counter()
    fused = fuse(models, [spec.options for spec in config.models], progress=say)
    seconds["fuse"] = time.perf_counter() - start
    fused_bytes = fused.SerializeToString()
    write_atomic(config.fused_model_path, fused_bytes)
    _, fusion_map = fusion_records(fused)
    say(f"fused into {config.fused_model_path} ({human_size(len(fused_bytes))}) in {seconds['fuse']:.2f} s")

    popef_path = artifact_bytes = executable_bytes = None
    if config.export_popef:
        start = time.perf_counter()
        try:
            artifact = compile_artifact(fused, config.target, config.ipu_version)
        except BackendError as e:
            raise FusionError(f"compiling for {config.target} failed: {e}") from e
        artifact_bytes = write_artifact(config.popef_path, artifact)
        executable_bytes = len(artifact.executable)
        fusion_map = artifact.fusion_map  # with what compilation found to share
        popef_path = config.popef_path
        seconds["compile"] = time.perf_counter() - start
        say(f"compiled for {config.target} into {popef_path} ({human_size(artifact_bytes)}) "
            f"in {seconds['compile']:.2f} s")
    return BuildResult(
        fused_model_path=config.fused_model_path,
        fused_model_bytes=len(fused_bytes),
        popef_path=popef_path,
        artifact_bytes=artifact_bytes,
        executable_bytes=executable_bytes,
        fusion_map=fusion_map,
        source_bytes=source_bytes,
        seconds=seconds,
    )
