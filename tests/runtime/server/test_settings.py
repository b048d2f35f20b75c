"""Server settings: the per-model batching file and its errors."""

from __future__ import annotations

import pytest

from popfuse.runtime.server.errors import ServerConfigError
from popfuse.runtime.server.settings import BatchingConfig, ServerSettings, load_model_config


def test_per_model_batching_overrides_the_default(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  cls: {max_batch_size: 32, max_queue_delay_us: 2000}\n  rec: {max_batch_size: 0}\n")
    config = load_model_config(path)
    settings = ServerSettings(default_batching=BatchingConfig(8, 100), batching=config)
    assert settings.batching_for("cls") == BatchingConfig(32, 2000) and settings.batching_for("cls").enabled
    assert not settings.batching_for("rec").enabled
    assert settings.batching_for("det") == BatchingConfig(8, 100)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[1, 2]", "expected a 'models' mapping"),
        ("models:\n  cls: {max_batch: 3}\n", "expected non-negative integers"),
        ("models:\n  cls: {max_batch_size: -1}\n", "expected non-negative integers"),
        ("models: [unclosed\n", "cannot read the model config"),
    ],
)
def test_bad_model_config_names_the_file_and_model(tmp_path, text, match):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ServerConfigError, match=match):
        load_model_config(path)
    with pytest.raises(ServerConfigError, match="no such model config"):
        load_model_config(tmp_path / "absent.yaml")
