"""Paddle's IPU configuration file: a table of good and bad files."""

from __future__ import annotations

import pytest

from popfuse.runtime.inference.ipu_config import load_ipu_config


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ipu_device_num,1\nipu_micro_batch_size,1\nipu_enable_fp16,false\n"
         "ipu_custom_ops_info,[[custom_relu, Relu, custom.ops, 1]]\n",
         {"ipu_device_num": 1, "ipu_micro_batch_size": 1, "ipu_enable_fp16": False,
          "ipu_custom_ops_info": [["custom_relu", "Relu", "custom.ops", "1"]]}),
        ("ipu_custom_ops_info,[[custom_relu, Relu, custom.ops, 1], [custom_gelu,Gelu,custom.ops,2]]",
         {"ipu_custom_ops_info": [["custom_relu", "Relu", "custom.ops", "1"],
                                  ["custom_gelu", "Gelu", "custom.ops", "2"]]}),
        ("ipu_custom_patterns,[[AccumulatePriorityPattern, false], [MatMulRhsGradOp, TRUE]]",
         {"ipu_custom_patterns": {"AccumulatePriorityPattern": False, "MatMulRhsGradOp": True}}),
        ("ipu_enable_pipelining,TRUE\nipu_enable_half_partial,1\nipu_enable_model_runtime_executor,yes",
         {"ipu_enable_pipelining": True, "ipu_enable_half_partial": True, "ipu_enable_model_runtime_executor": False}),
        ("ipu_available_memory_proportion, 0.5\nipu_replica_num , 4\nipu_batches_per_step,2",
         {"ipu_available_memory_proportion": 0.5, "ipu_replica_num": 4, "ipu_batches_per_step": 2}),
        ("ipu_custom_ops_info,[]", {"ipu_custom_ops_info": []}),
        ("ipu_device_num,2,3", None),  # split at the first comma: "2,3" is not an integer
    ],
)
def test_good_files(tmp_path, text, expected):
    path = tmp_path / "ipu.conf"
    path.write_text(text)
    if expected is None:
        with pytest.raises(ValueError, match="invalid value '2,3' for ipu_device_num"):
            load_ipu_config(path)
    else:
        assert load_ipu_config(path) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("ipu_device_num,1\n\nipu_enable_fp16,true", "invalid key '' in IPU config"),
        ("# a comment\nipu_device_num,1", "invalid key '#acomment' in IPU config"),
        ("ipu_devices,1", "invalid key 'ipu_devices' in IPU config"),
        ("ipu_device_num,one", "invalid value 'one' for ipu_device_num"),
        ("ipu_available_memory_proportion,lots", "invalid value 'lots'"),
        ("ipu_custom_ops_info,[custom_relu, Relu]", "expected a list like"),
        ("ipu_custom_ops_info,[[custom_relu, Relu, custom.ops]]", "needs \\[paddle op, IPU op, domain, version\\]"),
        ("ipu_custom_patterns,[[A, true, x]]", "needs \\[name, true\\|false\\]"),
    ],
)
def test_bad_files(tmp_path, text, match):
    path = tmp_path / "ipu.conf"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_ipu_config(path)


def test_missing_file_is_a_runtime_error(tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        load_ipu_config(tmp_path / "absent.conf")
