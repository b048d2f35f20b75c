"""Exception classes shared by the compiler and the runtime.

Every error popfuse raises on purpose derives from :class:`PopfuseError`, so a
caller can catch one class at a boundary. Messages name the file, key or tensor
at fault, what was expected and what was received.
"""


class PopfuseError(Exception):
    """Base class of every error popfuse raises on purpose."""


class ArtifactError(PopfuseError):
    """An artifact file is missing, truncated, corrupt, or built for another backend."""


class BackendError(PopfuseError):
    """A backend is unknown or unavailable here, or failed to compile, load or run a graph for a reason
    that is not the request's: the operator's problem (a server answers 5xx)."""


class ExecutionError(PopfuseError):
    """A request to a runner is malformed, or the model rejects its inputs: the caller's to fix
    (a server answers 4xx)."""


class SignatureError(ArtifactError):
    """An artifact's signature is missing where trusted keys are required, is by an untrusted key, or does not
    match the file; or a signing or trusted key cannot be read."""


class OutputError(PopfuseError):
    """A file cannot be written (disk full, no permission, read-only file system …): the message names it."""
