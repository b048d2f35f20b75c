"""Ed25519 signatures of artifacts: sign at build time, verify before any record is parsed.

What is signed is a small binary statement, never JSON: a fixed domain string,
then the exact header bytes of every blob before the signature, each of which
holds the SHA-256 of its blob's name and payload (``popef.signed_statement``).
A verifier checks the headers' digests and this signature with nothing but the
container's fixed binary layout, so an untrusted file's metadata is parsed only
once its signer is known to be trusted. This is the shape of OpenSSF model
signing (a signature over a manifest of per-file SHA-256 digests), with the
manifest being the file's own headers.

The signature blob holds the signer's raw 32-byte public key, then the 64-byte
signature. Keys are read from PEM (``openssl genpkey -algorithm ed25519``) or
OpenSSH (``ssh-keygen -t ed25519``) files. Signing and verifying need the
``cryptography`` package (``pip install 'popfuse[sign]'``); showing who signed
an artifact does not.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SignatureError
from .popef import Blob, BlobType, Signer, signed_statement

#: The name of the signature blob: the scheme, so that another one could follow.
SCHEME = "ed25519"
_KEY_SIZE = 32
_SIGNATURE_SIZE = 64

#: A trusted key: the path of a public key file, or the file's bytes.
KeySource = str | os.PathLike | bytes


@dataclass(frozen=True)
class Signature:
    """Who signed an artifact: the Ed25519 public key, and whether the signature was verified against it."""

    public_key: bytes
    verified: bool | None

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint as ``ssh-keygen -lf`` prints it: ``SHA256:`` and base64 of the key's hash."""
        return fingerprint(self.public_key)


def fingerprint(public_key: bytes) -> str:
    """OpenSSH's fingerprint of a raw Ed25519 public key, so that it can be compared with ``ssh-keygen -lf``."""
    wire = b"".join(struct.pack(">I", len(part)) + part for part in (b"ssh-ed25519", public_key))
    return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


def signer(key_path: str | os.PathLike) -> Signer:
    """A ``popef.Signer`` that signs with the Ed25519 private key in ``key_path`` (PEM or OpenSSH, unencrypted).

    Raises:
        SignatureError: the file is missing or unreadable, not an Ed25519 private key, or encrypted.
    """
    serialization, ed25519 = _crypto()
    path = Path(key_path)
    data = _read(path, "signing key")
    loaders = (serialization.load_pem_private_key, serialization.load_ssh_private_key)
    key = _load(path, data, loaders, ed25519.Ed25519PrivateKey, "private", password=None)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(statement: bytes) -> Blob:
        return Blob(BlobType.SIGNATURE, SCHEME, public + key.sign(statement))

    return sign


def public_key(source: KeySource) -> bytes:
    """The raw 32 bytes of the Ed25519 public key in a PEM or OpenSSH file (a path), or in its bytes.

    Raises:
        SignatureError: the file is missing or unreadable, or holds no Ed25519 public key.
    """
    serialization, ed25519 = _crypto()
    path = Path("<key bytes>") if isinstance(source, bytes) else Path(source)
    data = source if isinstance(source, bytes) else _read(path, "trusted key")
    key = _load(path, data, (serialization.load_pem_public_key, serialization.load_ssh_public_key),
                ed25519.Ed25519PublicKey, "public")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_of(blobs: list[Blob], label: str) -> Signature | None:
    """The signer of blobs read by ``popef.read_blobs``, verified against its own key when ``cryptography`` is
    installed (``verified`` is None otherwise); None for an unsigned file.

    That a signature verifies against the key inside the file says only that the file is intact since that
    key's holder signed it; ``verify`` says whether the holder is trusted.
    """
    signed = signed_statement(blobs)
    if signed is None:
        return None
    statement, blob = signed
    key, sig = _split(blob, label)
    try:
        _, ed25519 = _crypto()
    except SignatureError:
        return Signature(key, None)
    return Signature(key, _valid(ed25519, key, sig, statement))


def verify(blobs: list[Blob], trusted: Sequence[bytes], label: str) -> Signature:
    """Check that blobs read by ``popef.read_blobs`` are signed by one of the ``trusted`` raw public keys.

    Raises:
        SignatureError: the file is unsigned, signed by a key not in ``trusted``, or its signature does not
            verify (the file was changed after it was signed).
    """
    signed = signed_statement(blobs)
    if signed is None:
        raise SignatureError(
            f"{label}: the artifact is not signed, and this runtime accepts only artifacts signed by a trusted key. "
            "Hint: build it with `popfuse build CONFIG.yaml --sign-key KEY`"
        )
    statement, blob = signed
    key, sig = _split(blob, label)
    if key not in trusted:
        raise SignatureError(
            f"{label}: signed by key {fingerprint(key)}, which is not one of the {len(trusted)} trusted key(s) "
            f"({', '.join(map(fingerprint, trusted))}). Hint: add its public key to RuntimeConfig(trusted_keys=...)"
        )
    _, ed25519 = _crypto()
    if not _valid(ed25519, key, sig, statement):
        raise SignatureError(
            f"{label}: the signature by key {fingerprint(key)} does not match the file: it was changed after it was "
            "signed"
        )
    return Signature(key, True)


def _split(blob: Blob, label: str) -> tuple[bytes, bytes]:
    if blob.name != SCHEME or len(blob.payload) != _KEY_SIZE + _SIGNATURE_SIZE:
        raise SignatureError(
            f"{label}: the signature blob is {blob.name!r} of {len(blob.payload)} bytes; this popfuse reads "
            f"{SCHEME!r} signatures of {_KEY_SIZE + _SIGNATURE_SIZE} bytes"
        )
    payload = bytes(blob.payload)
    return payload[:_KEY_SIZE], payload[_KEY_SIZE:]


def _valid(ed25519, key: bytes, sig: bytes, statement: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(sig, statement)
    except (InvalidSignature, ValueError):
        return False
    return True


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise SignatureError(
            "signing and verifying artifacts needs the cryptography package: pip install 'popfuse[sign]'"
        ) from e
    return serialization, ed25519


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > 1 << 20:
            raise SignatureError(f"{path}: the {what} file is over 1 MB; expected an Ed25519 key file")
        return path.read_bytes()
    except OSError as e:
        raise SignatureError(f"{path}: cannot read the {what}: {e.strerror or e}") from e


def _load(path: Path, data: bytes, loaders, kind, visibility: str, **kwargs):
    from cryptography.exceptions import UnsupportedAlgorithm

    problems = []
    for load in loaders:
        try:
            key = load(data, **kwargs)
        except TypeError as e:  # an encrypted private key, read without a password
            raise SignatureError(
                f"{path}: the private key is encrypted; popfuse signs with an unencrypted key file "
                f"(decrypt a copy with `ssh-keygen -p -N '' -f KEY` or `openssl pkey -in KEY -out PLAIN`): {e}"
            ) from e
        except (ValueError, UnicodeError, UnsupportedAlgorithm) as e:  # the last: OpenSSH's reader, on a non-key
            problems.append(str(e))
            continue
        if not isinstance(key, kind):
            raise SignatureError(f"{path}: holds a {type(key).__name__}; popfuse signs with Ed25519 keys only")
        return key
    raise SignatureError(
        f"{path}: not an Ed25519 {visibility} key in PEM or OpenSSH format ({'; '.join(problems)}). Hint: make a "
        "key pair with `openssl genpkey -algorithm ed25519 -out key.pem && openssl pkey -in key.pem -pubout -out "
        "key.pub`"
    )
