"""Per-model statistics, Triton's shape, and the Prometheus view of them.

One record per model is the single source: the statistics endpoint returns it
as JSON and the ``/metrics`` collector reads it on each scrape.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


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
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, ok: bool, ns: int) -> None:
        with self.lock:
            (self.success if ok else self.fail).add(ns)
            self.last_inference_ms = int(time.time() * 1000)

    def execution(self, requests: int, rows: int, queue_ns: int, compute_ns: int) -> None:
        """One run of the model over ``requests`` batched requests of ``rows`` rows in all.

        ``queue_ns`` is the requests' total time in the queue.
        """
        with self.lock:
            self.execution_count += 1
            self.inference_count += rows
            self.queue.add(queue_ns, requests)
            self.compute.add(compute_ns)

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
                    "compute_infer": self.compute.to_json(),
                },
            }


class StatsCollector(Collector):
    """Exposes every model's statistics as Prometheus counters, with Triton's metric names."""

    def __init__(self, stats: dict[str, ModelStats]):
        self._stats = stats

    def collect(self):
        families = {
            "nv_inference_request_success": ("Successful inference requests", lambda s: s.success.count),
            "nv_inference_request_failure": ("Failed inference requests", lambda s: s.fail.count),
            "nv_inference_count": ("Inferences performed (a batched request counts its batch)",
                                   lambda s: s.inference_count),
            "nv_inference_exec_count": ("Model executions (batches)", lambda s: s.execution_count),
            "nv_inference_request_duration_us": ("Request duration, microseconds",
                                                 lambda s: (s.success.ns + s.fail.ns) / 1e3),
            "nv_inference_queue_duration_us": ("Queue duration, microseconds", lambda s: s.queue.ns / 1e3),
            "nv_inference_compute_infer_duration_us": ("Compute duration, microseconds", lambda s: s.compute.ns / 1e3),
        }
        for name, (doc, value) in families.items():
            family = CounterMetricFamily(name, doc, labels=["model", "version"])
            for stats in list(self._stats.values()):
                with stats.lock:
                    family.add_metric([stats.name, "1"], value(stats))
            yield family
