"""The models benchmarks run: PP-OCR's three (from rapidocr-onnxruntime) and synthetic ones."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from popfuse.fusion import IR_VERSION
from popfuse.fusion.graph import copy_model

OPSET = 17
PPOCR = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", (1, 3, 96, 160)),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),
}


@dataclass(frozen=True)
class Workload:
    """A source model file and one request for it, keyed by the model's own input names."""

    name: str
    path: Path
    feeds: dict[str, np.ndarray] = field(hash=False)


def text_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A white page with rows of dark strokes, normalised as PaddleOCR does (NCHW float32).

    Random noise is no test of the detector: it finds no text and outputs zeros.
    """
    _, _, height, width = shape
    rng = np.random.default_rng(seed)
    page = np.full((height, width, 3), 255.0)
    for top in range(height // 8, height - 16, 30):
        left = int(rng.integers(4, 12))
        while left < width - 12:
            stroke = int(rng.integers(3, 9))
            page[top : top + 14, left : left + stroke] = rng.integers(0, 60)
            left += stroke + int(rng.integers(2, 6))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((page / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def ppocr_path(name: str) -> Path:
    """Where rapidocr-onnxruntime installed PP-OCR model ``name`` (det, rec or cls).

    Raises:
        ModuleNotFoundError: rapidocr-onnxruntime is not installed; the message says how to install it.
    """
    try:
        models = importlib.resources.files("rapidocr_onnxruntime") / "models"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "PaddleOCR's models ship in rapidocr-onnxruntime, which is not installed here: "
            "pip install 'popfuse[examples]' (in a checkout: pip install -e '.[examples]')", name=e.name
        ) from e
    return Path(str(models / PPOCR[name][0]))


def ppocr(name: str, seed: int = 0) -> Workload:
    """A PP-OCR model and a text-like request for it."""
    return Workload(name, ppocr_path(name), {"x": text_image(PPOCR[name][1], seed)})


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def one_layer(folder: Path, name: str = "one_layer", seed: int = 0) -> Workload:
    """A single Add of a [1, 16] weight: the fixed per-request cost dominates."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.random((1, 16), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 16])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    path = _save(model, folder / f"{name}.onnx")
    return Workload(name, path, {"X": rng.random((1, 16), dtype=np.float32)})


def mlp(folder: Path, name: str, seed: int, width: int = 64, layers: int = 3) -> Workload:
    """A small MLP with its own weights, for the synthetic N-model sets."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "X"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) * 0.1, f"W{i}"))
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
        x = f"a{i}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    path = _save(model, folder / f"{name}.onnx")
    return Workload(name, path, {"X": rng.random((1, width), dtype=np.float32)})


def backbone_model(head_seed: int, width: int = 512, depth: int = 6) -> onnx.ModelProto:
    """An MLP backbone (the same weights whatever the seed) with a head of its own."""
    backbone = np.random.default_rng(1234)
    nodes, inits, x = [], [], "X"
    for i in range(depth):
        w = (backbone.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"backbone.W{i}"))
        nodes += [helper.make_node("MatMul", [x, f"backbone.W{i}"], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
        x = f"a{i}"
    head = np.random.default_rng(head_seed).standard_normal((width, 10)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head.W"))
    nodes.append(helper.make_node("MatMul", [x, "head.W"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        f"head{head_seed}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def backbone_with_head(folder: Path, head_seed: int, width: int = 512, depth: int = 6) -> Workload:
    """``backbone_model`` saved in ``folder``, with a request."""
    name = f"head{head_seed}"
    path = _save(backbone_model(head_seed, width, depth), folder / f"{name}.onnx")
    return Workload(name, path, {"X": np.random.default_rng(head_seed).random((1, width), dtype=np.float32)})


def variant(name: str, number: int, folder: Path) -> Workload:
    """PP-OCR model ``name`` with every float weight moved by a relative 1e-3 of its own (seeded by
    ``number``), so that no two variants share a weight: a multi-tenant host's distinct models. Scalars are
    kept: they are a layer norm's exponent and epsilon, not learned weights, and ``x ** 2.002`` is NaN for
    every negative ``x``."""
    from popfuse.fusion.passes.constants import fold_constants

    path = folder / f"{name}{number}.onnx"
    if not path.is_file():
        model = fold_constants(onnx.load(ppocr_path(name))).model  # the exporter's Constant nodes become weights
        rng = np.random.default_rng(number)
        for tensor in model.graph.initializer:
            if tensor.data_type == TensorProto.FLOAT and np.prod(tensor.dims) > 1:
                value = numpy_helper.to_array(tensor)
                moved = value * (1 + 1e-3 * rng.standard_normal(value.shape))
                tensor.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), tensor.name))
        _save(model, path)
    return Workload(f"{name}{number}", path, {"x": text_image(PPOCR[name][1], number)})


def nested_in_ifs(model: onnx.ModelProto, depth: int) -> onnx.ModelProto:
    """``model`` run from inside ``depth`` nested ``If`` nodes, as plain onnxruntime would run it behind a
    dispatch tree: the fused graph's mechanism with nothing of popfuse's. Each ``If`` compares an int64 [1]
    input ``index`` (fed 0) with 1 and takes the branch holding the next level; the other branch returns an
    empty tensor. The model's nodes, weights and functions are unchanged, and read its inputs from the main
    graph.

    Raises:
        ValueError: ``depth`` is negative, or the model has other than one output.
    """
    graph = model.graph
    if depth < 0:
        raise ValueError(f"nested_in_ifs takes a depth of 0 or more, not {depth}")
    if len(graph.output) != 1:
        raise ValueError(f"nested_in_ifs takes a model of one output; {graph.name!r} has {len(graph.output)}")
    if depth == 0:
        return copy_model(model)
    out = graph.output[0]
    elem, rank = out.type.tensor_type.elem_type, len(out.type.tensor_type.shape.dim)
    weights = {t.name for t in graph.initializer}  # listed among the inputs by models of IR version 3
    body = helper.make_graph(list(graph.node), "leaf", [], [helper.make_tensor_value_info(out.name, elem, None)],
                             list(graph.initializer), value_info=list(graph.value_info))
    for level in range(depth):
        empty = numpy_helper.from_array(np.zeros((0,) * rank, helper.tensor_dtype_to_np_dtype(elem)))
        other = helper.make_graph([helper.make_node("Constant", [], [f"empty{level}"], value=empty)], f"other{level}",
                                  [], [helper.make_tensor_value_info(f"empty{level}", elem, None)])
        result = out.name if level == depth - 1 else f"level{level}"
        one = numpy_helper.from_array(np.array([1], np.int64))
        nodes = [helper.make_node("Constant", [], [f"one{level}"], value=one),
                 helper.make_node("Less", ["index", f"one{level}"], [f"cond{level}"]),
                 helper.make_node("If", [f"cond{level}"], [result], then_branch=body, else_branch=other)]
        body = helper.make_graph(nodes, f"level{level}", [], [helper.make_tensor_value_info(result, elem, None)])
    inputs = [i for i in graph.input if i.name not in weights]
    main = helper.make_graph(nodes, "nested", [*inputs, helper.make_tensor_value_info("index", TensorProto.INT64, [1])],
                             [out])
    nested = helper.make_model(main, opset_imports=model.opset_import, functions=model.functions,
                               ir_version=IR_VERSION)
    onnx.checker.check_model(nested)
    return nested
