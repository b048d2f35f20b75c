"""The Paddle-to-ONNX converter, run as its own process: ``python -m popfuse.runtime.inference.paddle_convert``.

``paddle_models`` starts it, so nothing the converter does (``sys.exit``, a
crash in its C++) can end the user's process. One route serves both formats:

1. An old-format program (``.pdmodel``) is loaded by Paddle and translated to a
   Paddle 3 program (``.json``), as Paddle 3 itself does; a ``.json`` program is
   used as it is.
2. The program's ``*_interp`` ``scale`` attributes are written as float32:
   Paddle 3.3 writes them as float64, which paddle2onnx 2.1 refuses.
3. paddle2onnx 2.1 converts the program.
4. Its ``Concat`` nodes that join 0-D shape values with 1-D ones (a translated
   program's ``slice`` results) get those values as 1-D, as ONNX requires.
5. The inputs and outputs take the names Paddle Inference gives them.

Exit status 0 and the ONNX model at ``OUT``; otherwise a line starting with
``paddle_models.ERROR_PREFIX`` on stderr says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .paddle_models import ERROR_PREFIX

OPSET = 17
_UNSQUEEZE_AXES = "popfuse_paddle_convert/axes_0"


def float32_interp_scales(program: dict[str, Any]) -> int:
    """Write every ``*_interp`` op's ``scale`` elements as float32 in a Paddle 3 program's JSON, in place.

    Returns:
        How many elements were rewritten.
    """
    changed = 0
    for op in _ops(program):
        if not str(op.get("#", "")).endswith("_interp"):
            continue
        for attribute in op.get("A", []):
            if attribute.get("N") != "scale":
                continue
            for element in attribute.get("AT", {}).get("D", []):
                if isinstance(element, dict) and element.get("#") == "0.a_f64":
                    element["#"] = "0.a_f32"
                    changed += 1
    return changed


def _ops(node: Any):
    """Every operation of a program's JSON, nested regions included."""
    if isinstance(node, dict):
        if "regions" in node:
            for region in node["regions"]:
                for block in region.get("blocks", []):
                    for op in block.get("ops", []):
                        yield op
                        yield from _ops(op)
        else:
            for value in node.values():
                if isinstance(value, (dict, list)):
                    yield from _ops(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ops(value)


def concat_scalars_as_vectors(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with each 0-D input of a ``Concat`` that also joins 1-D values unsqueezed to 1-D.

    Paddle accepts a shape as a list of one-element tensors, some 0-D and some 1-D; ONNX's
    ``Concat`` needs one rank. Repeats until no such ``Concat`` is left, as fixing one can
    make ranks further on known.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    added = 0
    while True:
        ranks = _ranks(out)
        fixes = []
        for node in out.graph.node:
            if node.op_type != "Concat":
                continue
            found = [ranks.get(name) for name in node.input]
            if 0 in found and all(rank in (0, 1) for rank in found):
                fixes.append((node, [k for k, rank in enumerate(found) if rank == 0]))
        if not fixes:
            break
        if all(t.name != _UNSQUEEZE_AXES for t in out.graph.initializer):
            out.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), _UNSQUEEZE_AXES))
        inserted: dict[int, list[onnx.NodeProto]] = {}
        for node, positions in fixes:
            for k in positions:
                vector = f"{node.input[k]}/popfuse_1d_{added}"
                added += 1
                unsqueeze = helper.make_node("Unsqueeze", [node.input[k], _UNSQUEEZE_AXES], [vector], name=vector)
                inserted.setdefault(id(node), []).append(unsqueeze)
                node.input[k] = vector
        nodes = []
        for node in out.graph.node:
            nodes.extend(inserted.get(id(node), []))
            nodes.append(node)
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def rename_io(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """Return ``model`` with its inputs ordered as ``inputs`` and its outputs renamed, in order, to ``outputs``.

    Raises:
        ValueError: the model's inputs are not ``inputs``, or it has another number of outputs.
    """
    have = [v.name for v in model.graph.input]
    if sorted(have) != sorted(inputs):
        raise ValueError(f"the converted model's inputs are {have}; Paddle's are {inputs}")
    if len(model.graph.output) != len(outputs):
        raise ValueError(f"the converted model has {len(model.graph.output)} outputs; Paddle's are {outputs}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {v.name: v for v in out.graph.input}
    ordered = [by_name[name] for name in inputs]
    del out.graph.input[:]
    out.graph.input.extend(ordered)
    renames = {v.name: new for v, new in zip(out.graph.output, outputs) if v.name != new}
    taken = {o for n in out.graph.node for o in n.output} - set(renames)
    clash = sorted(set(renames.values()) & taken)
    if clash:
        raise ValueError(f"cannot name the outputs {clash}: the converted model uses those names inside")
    for value in out.graph.output:
        value.name = renames.get(value.name, value.name)
    for node in out.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    onnx.checker.check_model(out)
    return out


def _translate(model_file: Path, params_file: Path, folder: Path) -> tuple[Path, Path]:
    """Save an old-format program as a Paddle 3 program in ``folder``; returns its program and params files."""
    import paddle
    from paddle2onnx.convert import load_parameter, save_program

    paddle.enable_static()
    executor = paddle.static.Executor(paddle.CPUPlace())
    staged = folder / "source"
    staged.mkdir()
    # load_inference_model reads <prefix>.pdmodel and <prefix>.pdiparams.
    os.symlink(model_file.resolve(), staged / "model.pdmodel")
    os.symlink(params_file.resolve(), staged / "model.pdiparams")
    with paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(str(staged / "model"), executor)
    translated = paddle.pir.translate_to_pir(program.desc)
    load_parameter(translated)
    save_program(translated, str(folder / "model"))
    return folder / "model.json", folder / "model.pdiparams"


def _paddle_names(model_file: Path, params_file: Path) -> tuple[list[str], list[str]]:
    """The input and output names Paddle Inference gives the model."""
    from paddle import inference

    config = inference.Config(str(model_file), str(params_file))
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    return predictor.get_input_names(), predictor.get_output_names()


def convert(model_file: Path, params_file: Path, out: Path) -> None:
    """Convert a Paddle inference model to ONNX at ``out`` (see the module's steps)."""
    import paddle2onnx

    with tempfile.TemporaryDirectory(prefix="popfuse-paddle-convert-") as tmp:
        folder = Path(tmp)
        if model_file.suffix == ".pdmodel":
            program_file, program_params = _translate(model_file, params_file, folder)
        else:
            program_file, program_params = folder / "model.json", params_file
            shutil.copyfile(model_file, program_file)
        program = json.loads(program_file.read_text())
        if float32_interp_scales(program):
            program_file.write_text(json.dumps(program))
        data = paddle2onnx.export(str(program_file), str(program_params), opset_version=OPSET)
    if not data:
        raise RuntimeError("paddle2onnx wrote no model")
    model = concat_scalars_as_vectors(onnx.load_from_string(data))
    model = rename_io(model, *_paddle_names(model_file, params_file))
    out.write_bytes(model.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file", type=Path)
    parser.add_argument("params_file", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        convert(args.model_file, args.params_file, args.out)
    except Exception as e:  # the parent turns this line into its error; the traceback stays above it
        import traceback

        traceback.print_exc()
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"{ERROR_PREFIX} {type(e).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
