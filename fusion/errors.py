"""Errors the compiler raises; they share popfuse's one base class."""

from popfuse.runtime.errors import PopfuseError


class FusionError(PopfuseError):
    """A model cannot be fused as asked: a bad model, shape, precision or opset."""


class ConfigError(FusionError):
    """The build configuration is malformed: the message names the file and the key."""
