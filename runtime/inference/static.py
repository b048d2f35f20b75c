"""Paddle's static-graph entry points for the IPU: ``IpuStrategy`` and ``IpuCompiledProgram``.

Code written for ``paddle.static`` runs with ``from popfuse.runtime.inference
import static`` (and ``from popfuse import inference as paddle`` for
``paddle.enable_static()``). ``static.data`` and arithmetic on its variables
build an ONNX graph, enough for programs like the IPU documentation's; a
compiled program also accepts any ONNX model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from popfuse.fusion.graph import IR_VERSION

from ..backends import SessionOptions
from ..errors import PopfuseError
from .config import Fp16Switches
from .custom_ops import custom_op_libraries, map_custom_ops
from .paddle_models import Conversion

log = logging.getLogger(__name__)

_TRAINING_OPS = {"Gradient", "Adagrad", "Adam", "Momentum", "SGD"}
_OPSET = 17


class Variable:
    """A value of a static program; arithmetic with numbers or variables adds nodes."""

    def __init__(self, program: Program, name: str, elem_type: int):
        self.program, self.name, self.elem_type = program, name, elem_type

    def _binary(self, op: str, other: Any, swap: bool = False) -> Variable:
        other_name = other.name if isinstance(other, Variable) else self.program.constant(other, self.elem_type)
        inputs = [other_name, self.name] if swap else [self.name, other_name]
        return self.program.node(op, inputs, self.elem_type)

    def __add__(self, other):
        return self._binary("Add", other)

    def __radd__(self, other):
        return self._binary("Add", other, swap=True)

    def __sub__(self, other):
        return self._binary("Sub", other)

    def __rsub__(self, other):
        return self._binary("Sub", other, swap=True)

    def __mul__(self, other):
        return self._binary("Mul", other)

    def __rmul__(self, other):
        return self._binary("Mul", other, swap=True)

    def __truediv__(self, other):
        return self._binary("Div", other)


class Program:
    """A static program: inputs, nodes and constants, which ``to_onnx`` turns into a model."""

    def __init__(self):
        self.inputs: list[onnx.ValueInfoProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.types: dict[str, int] = {}

    def data(self, name: str, shape: Sequence[int | None], dtype: str = "float32") -> Variable:
        elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        dims = [d if d is not None and d >= 0 else f"{name}_{k}" for k, d in enumerate(shape)]
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, dims))
        self.types[name] = elem_type
        return Variable(self, name, elem_type)

    def constant(self, value: Any, elem_type: int) -> str:
        name = f"constant_{len(self.constants)}"
        array = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem_type))
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], elem_type: int) -> Variable:
        name = f"tmp_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=f"{op.lower()}_{len(self.nodes)}"))
        self.types[name] = elem_type
        return Variable(self, name, elem_type)

    def to_onnx(self) -> onnx.ModelProto:
        produced = [n.output[0] for n in self.nodes]
        outputs = [helper.make_tensor_value_info(n, self.types[n], None) for n in produced]
        graph = helper.make_graph(self.nodes, "program", self.inputs, outputs, initializer=self.constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=IR_VERSION)
        return onnx.shape_inference.infer_shapes(model)


_MAIN = Program()


def data(name: str, shape: Sequence[int | None], dtype: str = "float32") -> Variable:
    """``paddle.static.data``: an input of the default main program."""
    return _MAIN.data(name, shape, dtype)


def default_main_program() -> Program:
    return _MAIN


class IpuStrategy(Fp16Switches):
    """Paddle's IPU build options: typed, checked as Paddle checks them; fp16's switches as ``Config``'s."""

    _DEFAULTS: dict[str, Any] = {
        "num_ipus": 1,
        "is_training": True,
        "micro_batch_size": 1,
        "enable_manual_shard": False,
        "enable_pipelining": False,
        "batches_per_step": 1,
        "enable_gradient_accumulation": False,
        "accumulation_factor": 1,
        "enable_fp16": False,
        "available_memory_proportion": 1.0,
        "enable_model_runtime_executor": False,
    }

    def __init__(self):
        self._options = dict(self._DEFAULTS)
        self.custom_ops: list[tuple[str, str, str, int]] = []
        self.patterns: dict[str, bool] = {}

    def set_graph_config(self, num_ipus: int = 1, is_training: bool = True, micro_batch_size: int = 1,
                         enable_manual_shard: bool = False) -> None:
        if num_ipus == 1 and enable_manual_shard:
            raise RuntimeError("Only if num_ipus > 1, enable_manual_shard is able to be set True.")
        self.set_options({"num_ipus": num_ipus, "is_training": is_training, "micro_batch_size": micro_batch_size,
                          "enable_manual_shard": enable_manual_shard})

    def set_pipelining_config(self, enable_pipelining: bool = False, batches_per_step: int = 1,
                              enable_gradient_accumulation: bool = False, accumulation_factor: int = 1) -> None:
        if enable_pipelining and not self._options["enable_manual_shard"]:
            raise RuntimeError("Only if enable_manual_shard=True, enable_pipelining is able to be set True.")
        self.set_options({"enable_pipelining": enable_pipelining, "batches_per_step": batches_per_step,
                          "enable_gradient_accumulation": enable_gradient_accumulation,
                          "accumulation_factor": accumulation_factor})

    def set_precision_config(self, enable_fp16: bool = False) -> None:
        self.set_options({"enable_fp16": enable_fp16})

    def set_options(self, options: dict[str, Any]) -> None:
        """Set options by name; a value of the wrong type (an int for a float …) raises ValueError."""
        for name, value in options.items():
            if name not in self._options:
                raise ValueError(f"unknown IPU option {name!r}; options: {', '.join(self._options)}")
            expected = type(self._DEFAULTS[name])
            if type(value) is not expected:
                raise ValueError(
                    f"IPU option {name!r} takes {expected.__name__}, received {type(value).__name__} {value!r}"
                )
            self._options[name] = value

    def get_option(self, name: str) -> Any:
        if name not in self._options:
            raise ValueError(f"unknown IPU option {name!r}")
        return self._options[name]

    def add_custom_op(self, paddle_op: str, popart_op: str | None = None, domain: str = "custom.ops",
                      version: int = 1) -> None:
        """Map op type ``paddle_op`` to ``popart_op`` in ``domain`` at ``version`` when compiling."""
        self.custom_ops.append((paddle_op, popart_op or paddle_op, domain, version))

    def enable_pattern(self, pattern: str) -> None:
        self.patterns[pattern] = True

    def disable_pattern(self, pattern: str) -> None:
        """Turn off the onnxruntime graph optimisation of that name."""
        self.patterns[pattern] = False


class CompiledProgram:
    """What ``IpuCompiledProgram.compile`` returns: the transformed model, ready to run."""

    def __init__(self, model: onnx.ModelProto, strategy: IpuStrategy, conversion: Conversion | None = None):
        from .predictor import RuntimeSession, open_sessions

        self.model = model
        self._conversion = conversion
        options = SessionOptions(
            optimize=True,
            disabled_optimizers=tuple(name for name, on in strategy.patterns.items() if not on),
            custom_op_libraries=custom_op_libraries(strategy.custom_ops),
        )
        if strategy.get_option("enable_model_runtime_executor"):
            self._session = RuntimeSession(model.SerializeToString(), options, "cpu")
        else:
            (self._session,) = open_sessions(model.SerializeToString(), options, "cpu")
        self._steps = strategy.get_option("batches_per_step") if strategy.get_option("enable_pipelining") else 1
        self.feed_names = [p.name for p in self._session.inputs]
        self.fetch_names = [p.name for p in self._session.outputs]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feed`` (name → array); returns the fetches in order.

        Raises:
            RuntimeError: the model refuses the feeds (Paddle's error type).
        """
        from .predictor import run_steps

        try:
            results = run_steps(self._session, self.fetch_names, feed, self._steps)
        except PopfuseError as e:
            raise RuntimeError(str(e)) from e
        if self._conversion is not None:
            self._conversion.keep()  # it loaded and ran: worth converting only once
        return results


class IpuCompiledProgram:
    """``paddle.static.IpuCompiledProgram``: transforms a program for the IPU target (here onnxruntime)."""

    def __init__(self, program: Program | onnx.ModelProto | str | os.PathLike | None = None, scope: Any = None,
                 ipu_strategy: IpuStrategy | None = None):
        self.program = default_main_program() if program is None else program
        self.scope = scope
        self.strategy = ipu_strategy or IpuStrategy()

    def compile(self, feed_list: Sequence[Any], fetch_list: Sequence[Any]) -> CompiledProgram:
        """Extract the forward graph from feeds to fetches, set the micro batch, drop useless scale ops,
        apply fp16 when asked; returns a runnable program.

        Raises:
            RuntimeError: the program trains (it has gradient or optimizer ops); this backend is for inference.
        """
        from popfuse.fusion.passes.scale_ops import remove_useless_scale_ops
        from popfuse.fusion.passes.shapes import set_batch_size

        model, feed_list, fetch_list, conversion = self._model(feed_list, fetch_list)
        training = sorted({n.op_type for n in model.graph.node
                           if n.op_type in _TRAINING_OPS or n.op_type.endswith("_grad")})
        if training:
            raise RuntimeError(
                f"the program trains (it has {', '.join(training)} ops); popfuse runs inference only. "
                "Hint: compile the forward program, e.g. main_program.clone(for_test=True)"
            )
        if self.strategy.get_option("is_training"):
            log.warning("is_training=True, but the program has no backward or optimizer ops: compiled for inference")
        model = onnx.utils.Extractor(model).extract_model(list(feed_list), list(fetch_list))
        model = set_batch_size(model, self.strategy.get_option("micro_batch_size")).model
        model = map_custom_ops(model, self.strategy.custom_ops)
        scale_ops = remove_useless_scale_ops(model)
        if scale_ops.details:
            log.info("removed %d useless scale op(s)", scale_ops.details)
        model = scale_ops.model
        if self.strategy.get_option("enable_fp16"):
            from .predictor import to_fp16

            model = to_fp16(model, self.strategy.fp16_settings(), custom_op_libraries(self.strategy.custom_ops),
                            "the program")
        model.ir_version = IR_VERSION
        return CompiledProgram(model, self.strategy, conversion)

    def _model(self, feed_list: Sequence[Any], fetch_list: Sequence[Any]
               ) -> tuple[onnx.ModelProto, list, list, Conversion | None]:
        """The program as ONNX, with the names of its feeds and fetches there, and its conversion if it was
        a Paddle program."""
        if isinstance(self.program, Program):
            return self.program.to_onnx(), list(feed_list), list(fetch_list), None
        if isinstance(self.program, onnx.ModelProto):
            return self.program, list(feed_list), list(fetch_list), None
        if isinstance(self.program, (str, os.PathLike)):
            return onnx.load(self.program), list(feed_list), list(fetch_list), None
        if type(self.program).__module__.startswith("paddle"):
            from .paddle_models import onnx_from_program

            # Saving prunes the program to exactly these feeds and fetches; their ONNX names are its I/O.
            conversion = onnx_from_program(self.program, feed_list, fetch_list, self.scope)
            model = onnx.load_from_string(conversion.data)
            return model, [i.name for i in model.graph.input], [o.name for o in model.graph.output], conversion
        raise TypeError(
            f"IpuCompiledProgram takes a static Program, an onnx.ModelProto or a model path, received "
            f"{type(self.program).__name__}; a paddle.static.Program needs the paddle extra"
        )

