"""Per-model statistics, Triton's shape, and the Prometheus view of them.

One record per model is the single source: the statistics endpoint returns it
as JSON and ``/metrics`` renders it on each scrape, with Triton's metric names
and types. The exposition text is written here rather than by
``prometheus_client``, whose counters always gain a ``_total`` suffix that
Triton's do not have (``nv_inference_request_success``), so dashboards built
for Triton would find nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Why a request failed, as Triton labels ``nv_inference_request_failure``.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

#: The Prometheus text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStats:
    """What one model has done since it was loaded."""

    name: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    pending: int = 0
    last_inference_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, ns: int, failure: str | None = None) -> None:
        """One request answered after ``ns``: successfully, or failed for ``failure`` (one of FAILURE_REASONS)."""
        with self.lock:
            if failure is None:
                self.success.add(ns)
            else:
                self.fail.add(ns)
                self.failures[failure] += 1
            self.last_inference_ms = int(time.time() * 1000)

    def execution(self, requests: int, rows: int, queue_ns: int, input_ns: int, infer_ns: int,
                  output_ns: int) -> None:
        """One run of the model over ``requests`` batched requests of ``rows`` rows in all.

        ``queue_ns`` is the requests' total time in the queue; ``input_ns`` the time spent gathering their
        inputs into one batch, ``infer_ns`` the model's run, ``output_ns`` splitting its outputs again.
        """
        with self.lock:
            self.execution_count += 1
            self.inference_count += rows
            self.queue.add(queue_ns, requests)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)

    def to_json(self) -> dict:
        with self.lock:
            return {
                "name": self.name,
                "version": "1",
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.to_json(),
                    "fail": self.fail.to_json(),
                    "queue": self.queue.to_json(),
                    "compute_input": self.compute_input.to_json(),
                    "compute_infer": self.compute_infer.to_json(),
                    "compute_output": self.compute_output.to_json(),
                },
                "batch_stats": [],
            }


# Triton's families, with its help texts: (name, type, help, value of a model's stats).
_FAMILIES = (
    ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes",
     lambda s: s.success.count),
    ("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)",
     lambda s: s.inference_count),
    ("nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)",
     lambda s: s.execution_count),
    ("nv_inference_pending_request_count", "gauge",
     "Instantaneous number of pending requests awaiting execution per-model.", lambda s: s.pending),
    ("nv_inference_request_duration_us", "counter",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     lambda s: (s.success.ns + s.fail.ns) // 1000),
    ("nv_inference_queue_duration_us", "counter",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "counter",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "counter",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us", "counter",
     "Cumulative inference compute output duration in microseconds (does not include cached requests)",
     lambda s: s.compute_output.ns // 1000),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(stats: Iterable[ModelStats], labels: Mapping[str, str] | None = None) -> str:
    """Every model's statistics in the Prometheus text format, as Triton exposes them; ``labels`` are added to
    every sample after Triton's own (a worker process's ``worker``)."""
    models = sorted(stats, key=lambda s: s.name)
    snapshots = []
    for s in models:
        with s.lock:
            snapshots.append((_label(s.name), {name: value(s) for name, _, _, value in _FAMILIES},
                              dict(s.failures)))
    extra = "".join(f',{key}="{_label(value)}"' for key, value in (labels or {}).items())
    lines = []
    for name, kind, doc, _ in _FAMILIES:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{model="{model}",version="1"{extra}}} {values[name]}' for model, values, _ in snapshots]
        if name == "nv_inference_request_success":
            failure = "nv_inference_request_failure"
            lines += [f"# HELP {failure} Number of failed inference requests, all batch sizes",
                      f"# TYPE {failure} counter"]
            lines += [f'{failure}{{model="{model}",reason="{reason}",version="1"{extra}}} {count}'
                      for model, _, failures in snapshots for reason, count in failures.items()]
    return "\n".join(lines) + "\n"
