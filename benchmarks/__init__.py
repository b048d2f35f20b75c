"""popfuse's benchmark suite: ``python -m benchmarks`` or ``popfuse bench``.

Every figure is measured side by side with its baseline in one run and
reported as a ratio, because these machines are noisy. Results go to
``docs/benchmarks.md`` with plots under ``docs/benchmarks/``.
"""
