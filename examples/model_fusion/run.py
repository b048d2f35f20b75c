"""Run both subgraphs of the fused artifact, as PopRT's example does.

Each call passes only its own subgraph's tensors, with validate_io_params=False.
"""

from pathlib import Path

import numpy as np

from popfuse import ModelRunner, RuntimeConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    config = RuntimeConfig()
    config.validate_io_params = False
    runner = ModelRunner(str(HERE / "executable.popef"), config)

    # Subgraph 0: O = X + Y, reshaped to [2].
    inputs = {
        "index": np.array([0], dtype=np.uint32),
        "graph0/X": np.ones([1, 2], dtype=np.float32),
        "graph0/Y": 2 * np.ones([1, 2], dtype=np.float32),
    }
    outputs = {"graph0/O": np.zeros([2], dtype=np.float32)}
    runner.execute(inputs, outputs)
    print("graph0/O:", outputs["graph0/O"])

    # Subgraph 1: O = Concat(X, [[1.5, 2.0]]), in fp16.
    inputs = {
        "index": np.array([1], dtype=np.uint32),
        "graph1/X": np.zeros([1, 1], dtype=np.float16),
    }
    outputs = {"graph1/O": np.zeros([1, 3], dtype=np.float16)}
    runner.execute(inputs, outputs)
    print("graph1/O:", outputs["graph1/O"])


if __name__ == "__main__":
    main()
