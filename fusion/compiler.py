"""``build``: a configuration in, the fused ONNX and the ``executable.popef`` out.

YAML → FusionConfig → loaded models → ``fuse`` → compiled executable → artifact.
Each output is written atomically, so a failed build leaves no partial file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import onnx

from popfuse.runtime import metadata as md
from popfuse.runtime.artifact import Artifact, encode_artifact
from popfuse.runtime.atomic import Chunks, write_all
from popfuse.runtime.backends import Backend, resolve_target
from popfuse.runtime.display import human_size
from popfuse.runtime.dtypes import popef_from_onnx
from popfuse.runtime.signing import signer

from . import naming
from .config import FusionConfig, load_config, parse_config
from .dispatch import packed_graph
from .dispatch.sharing import group_models
from .errors import FusionError
from .fuse import FusedModel, Progress, fuse_models
from .loading import load_models
from .passes.backend_compile import backend_compile
from .passes.node_names import canonical_node_names
from .passes.opset import used_opsets_only
from .passes.weights import ExternalWeights, externalize_weights
from .pipeline import Pass, PassResult, final_model, run_passes

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


def compile_passes(backend: Backend, device: str) -> list[Pass]:
    """The compile stage: the backend optimises the packed graph, leaf by leaf, whose generated node names are then
    numbered deterministically; it imports only the domains it uses, and its weights leave it for the
    artifact's ``weights`` blob (``externalize_weights``)."""

    def copied_at_load(node: onnx.NodeProto, index: int, tensor: onnx.TensorProto) -> bool:
        return backend.copies_at_load(node.domain, node.op_type, index, len(tensor.dims), device)

    return [
        Pass("compile", partial(backend_compile, backend=backend, device=device)),
        Pass("node_names", canonical_node_names),
        Pass("opset_imports", used_opsets_only),
        Pass("weights", partial(externalize_weights, location=WEIGHTS_BLOB, copied_at_load=copied_at_load)),
    ]


def compile_artifact(
    fused: FusedModel, target: str, ipu_version: str | None = None, progress: Progress | None = None
) -> Artifact:
    """Compile a fusion for ``target`` and wrap it as an artifact (not yet written).

    The models are laid out in the packed layout (``dispatch.packed``), where
    models that begin with the same nodes over the same weights run them once;
    then the compile stage runs (``compile_passes``). The metadata lists where
    each weight lies. ``progress`` gets a line as the stage starts and one per pass.

    Raises:
        FusionError: ``fused`` is not a FusedModel; a PassError names the compile step that failed.
        BackendError: the target is unknown here.
    """
    if not isinstance(fused, FusedModel):
        raise FusionError(
            f"compile_artifact takes the FusedModel of fuse_models(), received {type(fused).__name__}"
        )
    backend, device = resolve_target(target)
    groups = tuple(group_models(fused.graphs))
    packed = fused.wrap(packed_graph(fused.graphs, groups), check=False)
    layout = md.SlotLayout(inputs=_slots(packed.graph.input), outputs=_slots(packed.graph.output))
    say = progress or (lambda line: None)
    passes = compile_passes(backend, device)
    say(f"compiling for {target}: {', '.join(p.name for p in passes)} …")
    results = run_passes(passes, packed, "the fused graph",
                         done=lambda name, seconds, result: say(f"  {name}: {seconds:.2f} s{_summary(result)}"))
    weights: ExternalWeights = results["weights"].details
    tensor_data = tuple(
        md.TensorData(t.name, md.TensorInfo(t.dims, popef_from_onnx(t.data_type)), WEIGHTS_BLOB, t.offset, t.size)
        for t in weights.tensors
    )
    metadata = md.Metadata(
        anchors=fused.anchors,
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
            fused.fusion_map,
            shared_weights=weights.shared + sum(g.shared_weights for g in groups),
            shared_weight_bytes=weights.shared_bytes + sum(g.shared_bytes for g in groups),
        ),
        executable=final_model(results).SerializeToString(),
        tensors={WEIGHTS_BLOB: weights.payload} if weights.payload else {},
    )


def _summary(result: PassResult) -> str:
    """What a compile pass did, in a few words, when its details say something."""
    if isinstance(result.details, ExternalWeights):
        return f", {len(result.details.tensors)} weights, {human_size(len(result.details.payload))}"
    return ""


def _slots(values) -> dict[str, tuple[str, ...]]:
    """The slot names of each PopEF data type, in order, from the packed graph's inputs or outputs."""
    out: dict[str, list[str]] = {}
    for v in values:
        if v.name != naming.INDEX:
            out.setdefault(popef_from_onnx(v.type.tensor_type.elem_type), []).append(v.name)
    return {t: tuple(names) for t, names in out.items()}


def build(
    config: FusionConfig | Mapping | str | os.PathLike,
    progress: Progress | None = None,
    sign_key: str | os.PathLike | None = None,
) -> BuildResult:
    """Run a whole build, as ``popfuse build CONFIG.yaml`` does.

    Args:
        config: A FusionConfig, a mapping with the YAML's keys (paths relative
            to the working folder), or the path of a YAML file.
        progress: Called with a line per stage and per model.
        sign_key: An Ed25519 private key file (PEM or OpenSSH) to sign the
            artifact with; None writes it unsigned.

    Raises:
        ConfigError, FusionError: naming the file, key, model or pass.
        SignatureError: ``sign_key`` cannot be used.
        OutputError: an output cannot be written; none was.
    """
    if isinstance(config, Mapping):
        config = parse_config(config)
    elif not isinstance(config, FusionConfig):
        config = load_config(config)
    say = progress or (lambda line: None)
    seconds: dict[str, float] = {}
    sign = None if sign_key is None else signer(sign_key)  # a bad key fails before any work

    start = time.perf_counter()
    models = load_models(config.models)
    source_bytes = sum(spec.path.stat().st_size for spec in config.models)
    seconds["load"] = time.perf_counter() - start
    say(f"loaded {len(models)} models ({human_size(source_bytes)}) in {seconds['load']:.2f} s")

    start = time.perf_counter()
    fused = fuse_models(models, [spec.options for spec in config.models], progress=say)
    public = fused.to_onnx().SerializeToString()
    seconds["fuse"] = time.perf_counter() - start
    say(f"fused {len(models)} models ({human_size(len(public))}) in {seconds['fuse']:.2f} s")

    artifact = None
    if config.export_popef:
        start = time.perf_counter()
        artifact = compile_artifact(fused, config.target, config.ipu_version, progress=say)
        seconds["compile"] = time.perf_counter() - start
        say(f"compiled in {seconds['compile']:.2f} s")
    # Written only once everything is compiled, and together: a build that fails or is interrupted leaves
    # output_dir as it was.
    files: list[tuple[Path, Chunks]] = [(config.fused_model_path, public)]
    if artifact is not None:
        files.append((config.popef_path, encode_artifact(artifact, sign)))
    sizes = write_all(files)
    say(f"wrote {config.fused_model_path}")
    artifact_bytes = None
    if artifact is not None:
        artifact_bytes = sizes[1]
        say(f"wrote {config.popef_path} ({human_size(artifact_bytes)}{', signed' if sign else ''})")
    return BuildResult(
        fused_model_path=config.fused_model_path,
        fused_model_bytes=len(public),
        popef_path=None if artifact is None else config.popef_path,
        artifact_bytes=artifact_bytes,
        executable_bytes=None if artifact is None else len(artifact.executable),
        # with what compilation found to share
        fusion_map=fused.fusion_map if artifact is None else artifact.fusion_map,
        source_bytes=source_bytes,
        seconds=seconds,
    )
