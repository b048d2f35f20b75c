"""popfuse's benchmark suite: ``popfuse bench`` or ``python -m popfuse.benchmarks``.

Every figure is measured side by side with its baseline in one run and
reported as a ratio, because these machines are noisy. Results go to
``benchmarks.md`` with plots beside it, in the folder the run names.
"""

if __name__ != "popfuse.benchmarks":  # imported by the name it had before popfuse installed as one package
    raise ImportError(
        f"popfuse's benchmarks are imported as popfuse.benchmarks, not {__name__!r}: run `popfuse bench` "
        "or `python -m popfuse.benchmarks`"
    )
