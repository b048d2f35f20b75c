"""Loading a build's models: files that are not ONNX, external data outside the model's folder, and
models too large to fuse, each refused by name before their weights are read."""

from __future__ import annotations

import resource

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from popfuse.fusion import FusionError, ModelOptions, ModelSpec, build
from popfuse.fusion.loading import load_models
from popfuse.runtime import Runner
from tests.models import scale_model


def spec(path, name="m") -> ModelSpec:
    return ModelSpec(path, ModelOptions(name=name))


def with_external(folder, location: str, length: int | None = None):
    """scale_model(n=300) whose weight B says its data lies at ``location`` (relative to ``folder``)."""
    model = scale_model(n=300)
    tensor = next(t for t in model.graph.initializer if t.name == "B")
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0", **({"length": str(length)} if length is not None else {})}
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    path = folder / "model.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("content", [b"", "tensor"], ids=["0 bytes", "a TensorProto"])
def test_a_file_that_is_not_an_onnx_model_is_named(tmp_path, content):
    path = tmp_path / "weights.onnx"
    tensor = numpy_helper.from_array(np.ones(4, np.float32))
    path.write_bytes(content if isinstance(content, bytes) else tensor.SerializeToString())
    with pytest.raises(FusionError, match=f"model 'm': '{path}' is not an ONNX model: (the file is empty|it parses, "
                                          "but has no graph)"):
        load_models([spec(path)])


def test_external_data_beside_the_model_is_read(tmp_path):
    (tmp_path / "b.bin").write_bytes(np.arange(300, dtype=np.float32).tobytes())
    path = with_external(tmp_path, "b.bin")
    result = build({"output_dir": str(tmp_path / "out"), "model_fusion": [{"input_model": str(path)}]})
    out = Runner(result.popef_path).execute({"index": np.array([0], np.uint32),
                                              "graph0/X": np.ones((1, 300), np.float32)})["graph0/O"]
    np.testing.assert_allclose(out, 2 + np.arange(300)[None])


@pytest.mark.parametrize(
    "location, match",
    [
        ("/etc/passwd", "which is not a path inside the model's folder"),
        ("../../b.bin", "which is not a path inside the model's folder"),
        ("link.bin", "link.bin' is a symbolic link"),
        ("absent.bin", "absent.bin' not found"),
        ("sub", "sub' is a folder, not a regular file"),
        ("short.bin", "1200 bytes at offset 0 lie outside"),
    ],
)
def test_external_data_outside_the_folder_or_missing_names_the_tensor_and_path(tmp_path, location, match):
    outside = tmp_path / "b.bin"
    outside.write_bytes(bytes(1200))
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "link.bin").symlink_to(outside)
    (folder / "sub").mkdir()
    (folder / "short.bin").write_bytes(bytes(10))
    path = with_external(folder, location, 1200 if location == "short.bin" else None)
    with pytest.raises(FusionError, match=f"model 'm': tensor 'B' keeps its data in '{location}'.*{match}"):
        load_models([spec(path)])


def test_models_over_2_gb_are_refused_before_their_data_is_read(tmp_path):
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GB that take no disk
    path = with_external(tmp_path, "big.bin", 3 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FusionError, match=r"the models take 3\.22 GB together \(m 3\.22 GB\); .* at most 2 GB"):
        load_models([spec(path)])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing was read


def test_two_models_that_fit_alone_but_not_together_are_refused(tmp_path):
    specs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        with open(folder / "big.bin", "wb") as f:
            f.truncate(1200 << 20)
        specs.append(spec(with_external(folder, "big.bin", 1200 << 20), name))
    with pytest.raises(FusionError, match=r"the models take 2\.52 GB together \(a 1\.26 GB, b 1\.26 GB\)"):
        load_models(specs)
