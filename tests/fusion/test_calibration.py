"""Representative inputs: .npz files, arrays in memory, generated requests, and checks against the model."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popfuse.fusion import ConfigError, FusionError
from popfuse.fusion.calibration import as_calibration, checked, generated, load_calibration
from tests.models import parse


def two_inputs():
    return parse("agraph (float[N, 3, 48, W] x, int64[2] ids) => (float[N, 3, 48, W] y) { y = Relu(x) }")


def test_one_request_per_npz_file(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((1, 3, 48, 10), np.float64), ids=np.array([1, 2]))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 3, 48, 5), np.float32), ids=np.array([3, 4]))
    calibration = load_calibration([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert calibration.source == "a.npz, b.npz" and not calibration.generated
    first, second = checked(calibration, two_inputs())
    assert first["x"].dtype == np.float32 and first["ids"].dtype == np.int64  # in the model's types
    assert second["x"].shape == (2, 3, 48, 5)


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: None, "calibration file .* not found"),
        (lambda p: p.write_bytes(b"not a zip"), r"cannot read .* as a NumPy .npz archive .*Hint: write it with"),
        (lambda p: np.save(p, np.ones(3)) or p.with_suffix(".npz.npy").rename(p), "as a NumPy .npz archive"),
        (lambda p: np.savez(p), "holds no arrays"),
        (lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)), "as a NumPy .npz archive"),
    ],
)
def test_unreadable_files_name_the_key_and_the_file(tmp_path, write, match):
    path = tmp_path / "c.npz"
    write(path)
    with pytest.raises(ConfigError, match=match) as e:
        load_calibration(path, "config.yaml: model_fusion[0]: key 'calibration'")
    assert str(e.value).startswith("config.yaml: model_fusion[0]: key 'calibration'")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=600))
def test_any_bytes_load_or_give_a_config_error(tmp_path, data, cut):
    # A real archive, cut short or with bytes spliced in, and arbitrary bytes.
    good = io.BytesIO()
    np.savez(good, x=np.arange(6, dtype=np.float32))
    blob = good.getvalue()
    for payload in (data, blob[:cut], blob[:cut] + data + blob[cut:]):
        path = tmp_path / "fuzz.npz"
        path.write_bytes(payload)
        try:
            calibration = load_calibration(path)
        except ConfigError:
            continue
        assert all(isinstance(a, np.ndarray) for r in calibration.requests for a in r.values())


def test_in_memory_requests():
    one = as_calibration({"x": np.ones((1, 3, 48, 8)), "ids": [0, 1]})
    assert one.source == "memory" and len(one.requests) == 1
    assert len(as_calibration([{"x": np.ones(1)}, {"x": np.zeros(1)}]).requests) == 2
    assert as_calibration(None) is None
    with pytest.raises(ConfigError, match="expected an .npz path, a mapping of input name to array"):
        as_calibration(42)
    with pytest.raises(ConfigError, match="each request must be an .npz path or a mapping, received int"):
        as_calibration([{"x": np.ones(1)}, 3])


def test_generated_request_is_uniform_deterministic_and_fills_open_dimensions():
    model = two_inputs()
    (request,) = generated(model).requests
    assert request["x"].shape == (1, 3, 48, 64)  # the open batch is 1, other open dimensions 64
    assert request["x"].dtype == np.float32 and -1 <= request["x"].min() and request["x"].max() < 1
    assert request["ids"].dtype == np.int64 and not request["ids"].any()
    np.testing.assert_array_equal(generated(model).requests[0]["x"], request["x"])
    assert generated(model).generated


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"x": np.ones((1, 3, 48, 8))}, r"lacks the model's input\(s\) 'ids'. The model's inputs: x, ids"),
        ({"x": np.ones((1, 3, 48, 8)), "ids": [1, 2], "z": [0]}, r"has array\(s\) 'z' that are no input"),
        ({"x": np.ones((1, 3, 40, 8)), "ids": [1, 2]},
         r"input 'x' takes shape \[-1, 3, 48, -1\].*received \[1, 3, 40, 8\]"),
        ({"x": np.ones((3, 48, 8)), "ids": [1, 2]}, "input 'x' takes shape"),
        ({"x": np.array([["a"]]), "ids": [1, 2]}, "input 'x' takes float32, received an array of str32"),
        ({"x": np.ones((1, 3, 48, 8)), "ids": [1.5, 2.0]}, "input 'ids' takes int64, received an array of float64"),
    ],
)
def test_requests_that_do_not_fit_the_model_name_the_input(request_, match):
    with pytest.raises(FusionError, match=match) as e:
        checked(as_calibration(request_), two_inputs())
    assert str(e.value).startswith("calibration 'memory': ")


def test_zip_of_arrays_that_are_not_npy_is_refused(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY garbage")
    with pytest.raises(ConfigError, match="as a NumPy .npz archive"):
        load_calibration(path)
