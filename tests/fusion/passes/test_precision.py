"""The precision pass: fp16 subgraphs convert and stay within tolerance."""

from __future__ import annotations

import numpy as np
import onnx

from popfuse.fusion import ModelOptions
from popfuse.fusion.passes.precision import convert_precision
from popfuse.runtime import Runner, RuntimeConfig
from tests.models import scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def test_fp16_subgraph_runs_on_cpu_within_tolerance(make_artifact):
    model = scale_model(0.1, n=8)
    path = make_artifact([model, model], [ModelOptions(precision="fp32"), ModelOptions(precision="fp16")])
    runner = Runner(path, LENIENT)
    x = np.linspace(-3, 3, 8, dtype=np.float32)[None]
    full = runner.execute({"graph0/X": x})["graph0/O"]
    half = runner.execute({"graph1/X": x.astype(np.float16)})["graph1/O"]
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=1e-2, rtol=1e-3)


def test_fp32_leaves_the_model_alone_and_fp16_reports_what_it_clamped():
    model = scale_model(1e6, n=4)  # the factor is past float16's largest value
    assert convert_precision(model, "fp32").model is model
    half = convert_precision(model, "fp16")
    assert half.modified and half.details == 1
    assert half.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
