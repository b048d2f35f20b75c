"""The YAML build configuration, in PopRT's schema, validated into dataclasses.

Keys outside ``model_fusion`` are global. The per-model keys ``input_shape``,
``precision``, ``max_tensor_size``, ``keep_io_types`` and ``precision_strict``
may also be set globally; a value set on one model overrides the global one for
that model. ``calibration`` is a model's own. Relative paths resolve against the
YAML file's folder.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from popfuse.runtime.backends import DEFAULT_TARGET, targets

from .calibration import Calibration, load_calibration
from .errors import ConfigError

PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime-cpu": ("fp32", "fp16"),
    "onnxruntime-cuda": ("fp32", "fp16"),
}
GLOBAL_KEYS = ("output_dir", "output_model", "export_popef", "ipu_version", "target", "model_fusion")
MODEL_KEYS = ("input_model", "name", "calibration")
SHARED_KEYS = ("input_shape", "precision", "max_tensor_size", "keep_io_types", "precision_strict")


@dataclass(frozen=True)
class ModelOptions:
    """How to prepare one model for fusion. None means the default.

    Attributes:
        name: The subgraph's name in the fusion map; defaults to the file's stem,
            or ``model{i}`` for a model given in memory.
        input_shape: Input name → full shape, fixing its dynamic dimensions.
        precision: ``fp32`` (as the model is) or ``fp16``.
        max_tensor_size: Largest tensor constant folding may create, in bytes;
            -1 means no bound.
        source: Where the model came from, recorded in the fusion map.
        calibration: fp16's representative requests: a Calibration, an ``.npz`` path, a mapping of input
            name to array, or a list of them (``calibration.as_calibration``); None generates one.
        keep_io_types: fp16 keeps float32 inputs and outputs (False: float16, as PopRT has them).
        precision_strict: fp16 fails the build when its measured error passes the tolerance (False: warns).
    """

    name: str | None = None
    input_shape: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    precision: str = "fp32"
    max_tensor_size: int = -1
    source: str | None = None
    calibration: Any = None
    keep_io_types: bool = False
    precision_strict: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One ``model_fusion`` entry: the file to load and how to prepare it."""

    path: Path
    options: ModelOptions


@dataclass(frozen=True)
class FusionConfig:
    """A whole build: the models, where to write, and the target."""

    models: tuple[ModelSpec, ...]
    output_dir: Path
    output_model: str = "model_fusion.onnx"
    export_popef: bool = True
    target: str = DEFAULT_TARGET
    ipu_version: str | None = None

    @property
    def fused_model_path(self) -> Path:
        """Where the fused ONNX is written."""
        return self.output_dir / self.output_model

    @property
    def popef_path(self) -> Path:
        """Where the artifact is written when ``export_popef`` is set."""
        return self.output_dir / "executable.popef"


def load_config(path: str | os.PathLike) -> FusionConfig:
    """Read and validate a YAML build file.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or has a
            bad value, or a model file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    problem = not_a_regular_file(path)
    if problem:
        raise ConfigError(f"{path}: {problem}; expected a YAML build file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from e
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: the config file is over {MAX_CONFIG_BYTES // 1024} KB; a build file is a few lines")
    try:
        data = yaml.load(text, Loader=_bounded_loader(str(path)))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from e
    return parse_config(data, base_dir=path.parent, label=str(path))


#: Bounds on a YAML build file, checked before anything is built from it.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 32
#: Nodes once aliases are expanded; an alias "bomb" (aliases of aliases) is refused here, before it grows.
MAX_CONFIG_NODES = 100_000


def _bounded_loader(label: str) -> type[yaml.SafeLoader]:
    """A safe loader that refuses nesting deeper than ``MAX_CONFIG_DEPTH`` and documents of more than
    ``MAX_CONFIG_NODES`` nodes with aliases expanded, while composing, so neither recursion nor expansion
    can run away."""

    class Loader(yaml.SafeLoader):
        depth = 0
        nodes = 0
        sizes: dict[int, int]

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor
                if anchor in self.anchors:
                    self._count(_expanded_size(self.anchors[anchor], self.sizes), self.peek_event())
                return super().compose_node(parent, index)
            self.depth += 1
            if self.depth > MAX_CONFIG_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{label}: nested more than {MAX_CONFIG_DEPTH} levels deep at line {mark.line + 1}; "
                    "a build file nests a few levels"
                )
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            self._count(1, None)
            return node

        def _count(self, n: int, event) -> None:
            self.nodes += n
            if self.nodes > MAX_CONFIG_NODES:
                where = f" at line {event.start_mark.line + 1}" if event is not None else ""
                raise ConfigError(
                    f"{label}: more than {MAX_CONFIG_NODES} values once its aliases are expanded{where}; "
                    "a build file has a few dozen. Hint: aliases (*name) that repeat other aliases multiply"
                )

    Loader.sizes = {}
    return Loader


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded, counted once per node object (aliases share them)."""
    if id(node) not in sizes:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def _show(value: Any) -> str:
    """``repr(value)``, shortened: an error message quotes what it received, never all of it."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 6


def parse_config(data: Any, base_dir: str | os.PathLike = ".", label: str = "<config>") -> FusionConfig:
    """Validate an already-parsed configuration mapping (YAML's keys and values)."""
    base = Path(base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys at the top level, received {type(data).__name__}")
    _check_keys(data, (*GLOBAL_KEYS, *SHARED_KEYS), label, "at the top level")
    target = _get(data, "target", str, DEFAULT_TARGET, label)
    if target not in targets():
        raise ConfigError(f"{label}: key 'target' is {_show(target)}; valid targets: {', '.join(targets())}")
    entries = data.get("model_fusion")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{label}: key 'model_fusion' must be a non-empty list of models, received {_show(entries)}")
    shared = {k: data[k] for k in SHARED_KEYS if k in data}
    models = tuple(_parse_model(entry, i, shared, target, base, label) for i, entry in enumerate(entries))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        if m.options.name in seen:
            raise ConfigError(
                f"{label}: model_fusion[{i}] and model_fusion[{seen[m.options.name]}] are both named "
                f"{m.options.name!r}; give one of them a distinct 'name'"
            )
        seen[m.options.name] = i
    export = _get(data, "export_popef", bool, True, label)
    ipu_version = data.get("ipu_version")
    return FusionConfig(
        models=models,
        output_dir=base / _get(data, "output_dir", str, ".", label),
        output_model=_get(data, "output_model", str, "model_fusion.onnx", label),
        export_popef=export,
        target=target,
        ipu_version=None if ipu_version is None else str(ipu_version),
    )


def _parse_model(entry: Any, i: int, shared: dict[str, Any], target: str, base: Path, label: str) -> ModelSpec:
    where = f"{label}: model_fusion[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'input_model', received {_show(entry)}")
    _check_keys(entry, (*MODEL_KEYS, *SHARED_KEYS), label, f"in model_fusion[{i}]")
    source = entry.get("input_model")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{where}: key 'input_model' is required and must be a path to an .onnx file")
    path = base / source
    problem = not_a_regular_file(path)
    if problem:
        raise ConfigError(f"{where}: key 'input_model': {problem}; expected an .onnx file")
    merged = {**shared, **entry}
    precision = _get(merged, "precision", str, "fp32", where)
    allowed = PRECISIONS[target]
    if precision not in allowed:
        raise ConfigError(
            f"{where}: precision {_show(precision)} is not supported by target {target}; "
            f"supported precisions: {', '.join(allowed)}"
        )
    max_tensor_size = _get(merged, "max_tensor_size", int, -1, where)
    if max_tensor_size < -1:
        raise ConfigError(
            f"{where}: key 'max_tensor_size' must be -1 (no bound) or a size in bytes, received {max_tensor_size}"
        )
    calibration = None
    if "calibration" in entry:
        if precision != "fp16":
            raise ConfigError(
                f"{where}: key 'calibration' gives fp16 its representative inputs, but this model's precision is "
                f"{precision!r}. Hint: set precision: fp16, or drop the key"
            )
        calibration = _calibration(entry["calibration"], base, f"{where}: key 'calibration'")
    return ModelSpec(
        path=path,
        options=ModelOptions(
            name=_get(entry, "name", str, path.stem, where),
            input_shape=parse_input_shape(merged.get("input_shape", []), where),
            precision=precision,
            max_tensor_size=max_tensor_size,
            source=source,
            calibration=calibration,
            keep_io_types=_get(merged, "keep_io_types", bool, False, where),
            precision_strict=_get(merged, "precision_strict", bool, False, where),
        ),
    )


def _calibration(value: Any, base: Path, where: str) -> Calibration:
    """``calibration: x.npz`` or ``calibration: [a.npz, b.npz]``, relative to the YAML's folder."""
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{where}: expected a path to an .npz file or a list of them, received {value!r}")
    return load_calibration([base / p for p in paths], where)


def parse_input_shape(value: Any, where: str = "input_shape") -> dict[str, tuple[int, ...]]:
    """Parse PopRT's ``['X=1,2', 'Y=1,2']`` (or a mapping ``{X: [1, 2]}``) into name → shape."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{where}: input_shape entry {_show(item)} must look like 'NAME=1,3,224,224'")
            name, dims = item.rsplit("=", 1)
            items.append((name.strip(), dims.split(",")))
    else:
        raise ConfigError(f"{where}: input_shape must be a list like ['X=1,2'], received {_show(value)}")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in items:
        try:
            shape = tuple(int(str(d).strip()) for d in dims)
        except ValueError:
            raise ConfigError(f"{where}: input_shape for {name!r} has a non-integer dimension: {_show(dims)}") from None
        if not name or not shape or any(d < 0 for d in shape):
            raise ConfigError(
                f"{where}: input_shape for {name!r} must be non-negative integers, received {_show(dims)}"
            )
        shapes[name] = shape
    return shapes


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a model or data file (missing, a folder, a FIFO, a device …), or None
    when it is a regular file. Nothing is opened: opening a FIFO would wait for a writer."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"file {str(path)!r} not found"
    except OSError as e:
        return f"cannot read {str(path)!r}: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a file")
    return f"{str(path)!r} is {kind}, not a regular file"


def _check_keys(mapping: Mapping, valid: tuple[str, ...], label: str, where: str) -> None:
    for key in mapping:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{label}: unknown key {_show(key)} {where}{hint}; valid keys: {', '.join(valid)}")


def _get(mapping: Mapping, key: str, kind: type, default: Any, where: str) -> Any:
    value = mapping.get(key, default)
    # bool is an int in Python; a YAML `true` must not pass as a size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: key {_show(key)} must be {kind.__name__}, received {_show(value)}")
    return value
