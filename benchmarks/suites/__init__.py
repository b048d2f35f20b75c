"""One module per measured target; each exposes ``run(ctx) -> dict``."""
