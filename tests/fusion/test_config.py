"""The YAML build schema: PopRT's keys, overrides, paths, and errors that name the key."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from popfuse.fusion import ConfigError, load_config, parse_config
from tests.models import scale_model


@pytest.fixture
def models_dir(tmp_path):
    onnx.save(scale_model(), tmp_path / "model0.onnx")
    onnx.save(scale_model(3.0), tmp_path / "model1.onnx")
    return tmp_path


def write_yaml(folder, text):
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_poprt_example_schema(models_dir):
    path = write_yaml(
        models_dir,
        """
        output_dir: './out'
        output_model: 'model_fusion.onnx'
        export_popef: True
        max_tensor_size: -1
        ipu_version: 'ipu21'
        precision: 'fp16'
        model_fusion:
          - input_model: 'model0.onnx'
            input_shape: ['X=1,4']
            precision: 'fp32'
          - input_model: 'model1.onnx'
            name: second
        """,
    )
    config = load_config(path)
    assert config.output_dir == models_dir / "out"
    assert config.popef_path == models_dir / "out" / "executable.popef"
    assert config.ipu_version == "ipu21"
    assert config.target == "onnxruntime-cpu"
    first, second = config.models
    assert first.path == models_dir / "model0.onnx"
    assert first.options.name == "model0"
    assert first.options.input_shape == {"X": (1, 4)}
    assert first.options.precision == "fp32"  # the model's value overrides the global one
    assert second.options.name == "second"
    assert second.options.precision == "fp16"  # the global value applies
    assert second.options.max_tensor_size == -1


def test_relative_paths_resolve_against_the_yaml_folder(models_dir, tmp_path, monkeypatch):
    path = write_yaml(models_dir, "model_fusion:\n  - input_model: model0.onnx\n")
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(path).models[0].path == models_dir / "model0.onnx"


def test_unknown_key_lists_the_valid_keys(models_dir):
    path = write_yaml(models_dir, "model_fusion:\n  - input_model: model0.onnx\n    precison: fp16\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "'precison'" in message and "did you mean 'precision'" in message
    assert ("valid keys: input_model, name, calibration, input_shape, precision, max_tensor_size, keep_io_types, "
            "precision_strict") in message
    assert str(path) in message


def test_unknown_global_key(models_dir):
    path = write_yaml(models_dir, "outptu_dir: x\nmodel_fusion:\n  - input_model: model0.onnx\n")
    with pytest.raises(ConfigError, match="unknown key 'outptu_dir' at the top level"):
        load_config(path)


def test_missing_model_file_names_the_path(models_dir):
    path = write_yaml(models_dir, "model_fusion:\n  - input_model: nowhere.onnx\n")
    with pytest.raises(ConfigError, match=r"model_fusion\[0\].*nowhere.onnx.*not found"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_malformed_yaml_gives_line_and_column(models_dir):
    path = write_yaml(models_dir, "model_fusion:\n  - input_model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(path)


@pytest.mark.parametrize(
    "shape, match",
    [
        ("['X']", "must look like 'NAME=1,3,224,224'"),
        ("['X=1,a']", "non-integer dimension"),
        ("['X=1,-2']", "non-negative"),
        ("'X=1,2'", "must be a list"),
    ],
)
def test_bad_input_shape_syntax(models_dir, shape, match):
    path = write_yaml(models_dir, f"model_fusion:\n  - input_model: model0.onnx\n    input_shape: {shape}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


@pytest.mark.parametrize("precision", ["fp8", "fp8_weight", "int8"])
def test_unsupported_precision_names_the_supported_ones(models_dir, precision):
    path = write_yaml(models_dir, f"model_fusion:\n  - input_model: model0.onnx\n    precision: {precision}\n")
    expected = rf"precision '{precision}' is not supported.*supported precisions: fp32, fp16"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_bad_types_and_values(models_dir):
    base = "model_fusion:\n  - input_model: model0.onnx\n"
    with pytest.raises(ConfigError, match="'export_popef' must be bool"):
        parse_config({"export_popef": "yes", "model_fusion": [{"input_model": "model0.onnx"}]}, models_dir)
    with pytest.raises(ConfigError, match="'max_tensor_size' must be -1"):
        load_config(write_yaml(models_dir, "max_tensor_size: -7\n" + base))
    with pytest.raises(ConfigError, match="'max_tensor_size' must be int"):
        load_config(write_yaml(models_dir, "max_tensor_size: true\n" + base))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config(write_yaml(models_dir, "model_fusion: []\n"))
    with pytest.raises(ConfigError, match="mapping of keys at the top level"):
        load_config(write_yaml(models_dir, "- a\n- b\n"))


def test_unknown_target_and_ipu_hint(models_dir):
    entry = [{"input_model": "model0.onnx"}]
    with pytest.raises(ConfigError, match="valid targets: onnxruntime-cpu, onnxruntime-cuda"):
        parse_config({"target": "tpu", "model_fusion": entry}, models_dir)
    assert parse_config({"target": "onnxruntime-cuda", "model_fusion": entry}, models_dir).target == "onnxruntime-cuda"


def test_duplicate_names_suggest_a_name_key(models_dir):
    entry = {"input_model": "model0.onnx"}
    with pytest.raises(ConfigError, match="both named 'model0'; give one of them a distinct 'name'"):
        parse_config({"model_fusion": [entry, entry]}, models_dir)
    config = parse_config({"model_fusion": [entry, {**entry, "name": "again"}]}, models_dir)
    assert [m.options.name for m in config.models] == ["model0", "again"]


def test_fp16_keys_calibration_io_and_strictness(models_dir):
    np.savez(models_dir / "a.npz", X=np.ones((1, 4), np.float32))
    np.savez(models_dir / "b.npz", X=np.zeros((1, 4), np.float32))
    path = write_yaml(
        models_dir,
        """
        precision: fp16
        keep_io_types: true
        model_fusion:
          - input_model: model0.onnx
            calibration: a.npz
            precision_strict: true
          - input_model: model1.onnx
            calibration: [a.npz, b.npz]
            keep_io_types: false
        """,
    )
    first, second = (m.options for m in load_config(path).models)
    assert first.calibration.source == "a.npz" and first.keep_io_types and first.precision_strict
    assert len(second.calibration.requests) == 2 and not second.keep_io_types and not second.precision_strict


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("calibration: missing.npz\n    precision: fp16",
         "model_fusion\\[0\\]: key 'calibration': calibration file .*missing.npz.* not found"),
        ("calibration: []\n    precision: fp16",
         "key 'calibration': expected a path to an .npz file or a list of them"),
        ("calibration: {x: 1}\n    precision: fp16", "key 'calibration': expected a path"),
        ("calibration: a.npz",
         "key 'calibration' gives fp16 its representative inputs, but this model's precision is 'fp32'"),
        ("keep_io_types: yes please", "key 'keep_io_types' must be bool"),
        ("precision_strict: 1", "key 'precision_strict' must be bool"),
    ],
)
def test_bad_fp16_keys_name_the_key(models_dir, entry, match):
    np.savez(models_dir / "a.npz", X=np.ones((1, 4), np.float32))
    path = write_yaml(models_dir, f"model_fusion:\n  - input_model: model0.onnx\n    {entry}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def alias_bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": each anchor repeats the one before nine times; output_dir names the last."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\noutput_dir: *a{levels - 1}\nmodel_fusion: [{{input_model: model0.onnx}}]\n"


@pytest.mark.parametrize(
    "text, match",
    [
        (alias_bomb(), r"more than 100000 values once its aliases are expanded at line 6"),
        ("model_fusion: " + "[" * 5000 + "]" * 5000, r"nested more than 32 levels deep at line 1"),
        ("model_fusion:\n" + "- " * 5000 + "x\n", r"nested more than 32 levels deep"),
        ("output_dir: '" + "x" * (1 << 20) + "'\n", r"the config file is over 1024 KB"),
    ],
    ids=["alias bomb", "5,000 deep flow", "5,000 deep block", "over 1 MB"],
)
def test_yaml_is_bounded_before_it_is_expanded(models_dir, text, match):
    path = models_dir / "config.yaml"
    path.write_text(text)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=match):
        load_config(path)
    assert time.monotonic() - start < 1.0


def test_anchors_and_aliases_within_bounds_still_work(models_dir):
    text = "input_shape: &s ['X=1,4']\nmodel_fusion:\n  - {input_model: model0.onnx, input_shape: *s}\n"
    assert load_config(write_yaml(models_dir, text)).models[0].options.input_shape == {"X": (1, 4)}


def test_a_long_value_is_shown_shortened(models_dir):
    path = write_yaml(models_dir, f"output_dir: [{', '.join(['x' * 50] * 1000)}]\nmodel_fusion: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_model_path_that_is_not_a_regular_file_says_what_it_is(models_dir, kind):
    if kind == "folder":
        (models_dir / "m.onnx").mkdir()
        target, what = models_dir / "m.onnx", "a folder"
    elif kind == "fifo":
        os.mkfifo(models_dir / "m.onnx")
        target, what = models_dir / "m.onnx", "a FIFO"
    else:
        target, what = Path("/dev/zero"), "a device"
    path = write_yaml(models_dir, f"model_fusion:\n  - input_model: {target}\n")
    with pytest.raises(ConfigError, match=f"'{target}' is {what}, not a regular file; expected an .onnx file"):
        load_config(path)
