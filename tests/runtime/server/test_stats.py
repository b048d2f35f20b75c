"""Statistics as Triton's JSON, and as Triton's Prometheus metrics: its names, types and labels."""

from __future__ import annotations

from popfuse.runtime.server.stats import ModelStats, metrics_text


def test_metrics_have_tritons_names_types_and_no_total_suffix():
    stats = ModelStats('a"b')
    stats.request(2_000_000)
    stats.request(1_000_000, "BACKEND")
    stats.execution(1, 4, 5_000, 1_000, 7_000, 2_000)
    text = metrics_text([stats])
    assert "_total" not in text
    assert 'nv_inference_request_success{model="a\\"b",version="1"} 1' in text
    assert 'nv_inference_request_failure{model="a\\"b",reason="BACKEND",version="1"} 1' in text
    assert 'nv_inference_request_failure{model="a\\"b",reason="REJECTED",version="1"} 0' in text
    assert 'nv_inference_count{model="a\\"b",version="1"} 4' in text
    assert 'nv_inference_request_duration_us{model="a\\"b",version="1"} 3000' in text
    assert 'nv_inference_compute_input_duration_us{model="a\\"b",version="1"} 1' in text
    assert 'nv_inference_compute_output_duration_us{model="a\\"b",version="1"} 2' in text
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    assert types.pop("nv_inference_pending_request_count") == "gauge"
    assert set(types.values()) == {"counter"} and len(types) == 9
    json = stats.to_json()["inference_stats"]
    assert json["compute_input"] == {"count": 1, "ns": 1000} and json["fail"]["count"] == 1


def test_a_worker_process_labels_every_sample_after_tritons_labels():
    stats = ModelStats("m")
    stats.request(1_000_000, "OTHER")
    plain, labelled = metrics_text([stats]), metrics_text([stats], {"worker": "1"})
    samples = [line for line in labelled.splitlines() if not line.startswith("#")]
    assert len(samples) == len([line for line in plain.splitlines() if not line.startswith("#")])
    assert all(line.split("}")[0].endswith(',worker="1"') for line in samples)
    assert 'nv_inference_request_failure{model="m",reason="OTHER",version="1",worker="1"} 1' in samples
    assert [line for line in labelled.splitlines() if line.startswith("#")] == [
        line for line in plain.splitlines() if line.startswith("#")]
