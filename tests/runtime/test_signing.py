"""Signed artifacts: built with a key, loaded only when signed by a trusted one, refused after any edit."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from popfuse.fusion import build
from popfuse.runtime import ArtifactError, Runner, RuntimeConfig
from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.dump import describe, render
from popfuse.runtime.errors import SignatureError
from popfuse.runtime.popef import Blob, BlobType, encode_header, iter_encoded, read_blobs
from popfuse.runtime.signing import fingerprint, signer
from tests.models import scale_model

PEM = serialization.Encoding.PEM


def key_pair(folder: Path, name: str, openssh: bool = False) -> tuple[Path, Path]:
    """A new Ed25519 key pair written as ``openssl`` (PKCS8/SPKI PEM) or ``ssh-keygen`` (OpenSSH) write them."""
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / name, folder / f"{name}.pub"
    if openssh:
        private.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH))
    else:
        private.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A signed build of one small model: (artifact, public key, another public key)."""
    import onnx

    folder = tmp_path_factory.mktemp("signed")
    onnx.save(scale_model(n=300), folder / "m.onnx")
    private, public = key_pair(folder, "signer")
    _, other = key_pair(folder, "other", openssh=True)
    result = build({"output_dir": str(folder / "out"), "model_fusion": [{"input_model": str(folder / "m.onnx")}]},
                   sign_key=private)
    return result.popef_path, public, other


def run(path: Path, *keys) -> np.ndarray:
    runner = Runner(path, RuntimeConfig(trusted_keys=keys))
    return runner.execute({"index": np.array([0], np.uint32), "graph0/X": np.ones((1, 300), np.float32)})["graph0/O"]


def test_a_signed_artifact_loads_with_its_key_trusted_and_shows_its_signer(signed):
    path, public, other = signed
    np.testing.assert_allclose(run(path, public), 2 + np.arange(300)[None])
    np.testing.assert_allclose(run(path, other, public.read_bytes()), 2 + np.arange(300)[None])
    info = describe(path)
    assert info["signature"]["verified"] is True
    raw = Runner(path, RuntimeConfig(trusted_keys=[public])).signature.public_key
    assert info["signature"]["signer"] == fingerprint(raw)
    assert f"Signature: ed25519, signed by key {fingerprint(raw)} (the signature matches the file" in render(info)


def test_an_untrusted_signer_or_an_unsigned_artifact_is_refused(signed, make_artifact):
    path, public, other = signed
    with pytest.raises(SignatureError, match=r"signed by key SHA256:\S+, which is not one of the 1 trusted key"):
        run(path, other)
    unsigned = make_artifact([scale_model(n=300)])
    with pytest.raises(SignatureError, match=r"not signed.*--sign-key"):
        run(unsigned, public)
    assert "Signature: none (unsigned)" in render(describe(unsigned))
    run(unsigned)  # without trusted keys, unsigned artifacts load as before


def edits(path: Path) -> dict[str, bytes]:
    """Forged versions of a signed file: every checksum and digest recomputed, the signature kept."""
    blobs = read_blobs(path)
    signature = blobs.pop()
    meta = json.loads(decompress(blobs[0].payload, 1 << 26, "metadata"))
    meta["isInference"] = False
    weights = bytearray(blobs[-1].payload)
    weights[100] ^= 1
    keep = lambda _: signature  # noqa: E731
    forged = {
        "metadata": [Blob(BlobType.METADATA, "metadata", compress(json.dumps(meta).encode())), *blobs[1:]],
        "weight": [*blobs[:-1], Blob(BlobType.TENSOR, blobs[-1].name, bytes(weights))],
        "dropped blob": blobs[:-1],
        "renamed blob": [*blobs[:-1], Blob(BlobType.TENSOR, "weights2", blobs[-1].payload)],
    }
    out = {name: b"".join(iter_encoded(b, keep)) for name, b in forged.items()}
    data = path.read_bytes()
    out["appended blob"] = data + encode_header(Blob(BlobType.OPAQUE, "x", b"1"), len(data)) + b"1"
    out["signature dropped"] = b"".join(iter_encoded(blobs))
    return out


def test_every_edit_of_a_signed_artifact_is_refused(signed, tmp_path):
    path, public, other = signed
    for name, data in edits(path).items():
        forged = tmp_path / f"{name}.popef"
        forged.write_bytes(data)
        with pytest.raises(ArtifactError, match="changed after it was signed|is not signed|follows the signature"):
            run(forged, public)
    signed_by_other = read_blobs(path)[:-1]
    forged = tmp_path / "resigned.popef"
    forged.write_bytes(b"".join(iter_encoded(signed_by_other, signer(Path(str(other)[: -len(".pub")])))))
    with pytest.raises(SignatureError, match="not one of the 1 trusted key"):
        run(forged, public)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a key", "not an Ed25519 private key in PEM or OpenSSH format"),
        (None, "cannot read the signing key"),
        ("encrypted", "the private key is encrypted"),
        ("rsa", "holds a .*RSAPrivateKey; popfuse signs with Ed25519 keys only"),
    ],
)
def test_an_unusable_signing_key_is_named_before_the_build_starts(tmp_path, content, match):
    key = tmp_path / "key.pem"
    if content == "encrypted":
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
        key.write_bytes(pem)
    elif content == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa

        key.write_bytes(rsa.generate_private_key(65537, 1024).private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    elif content is not None:
        key.write_bytes(content)
    import onnx

    onnx.save(scale_model(), tmp_path / "m.onnx")
    with pytest.raises(SignatureError, match=f"{key}: .*{match}"):
        build({"output_dir": str(tmp_path / "out"), "model_fusion": [{"input_model": str(tmp_path / "m.onnx")}]},
              sign_key=key)
    assert not (tmp_path / "out").exists()


def test_the_cli_signs_and_dump_shows_the_signer(tmp_path):
    import onnx

    onnx.save(scale_model(), tmp_path / "m.onnx")
    (tmp_path / "fusion.yaml").write_text("output_dir: out\nmodel_fusion:\n  - input_model: m.onnx\n")
    private, public = key_pair(tmp_path, "key", openssh=True)
    cli = [sys.executable, "-m", "popfuse.cli"]
    built = subprocess.run([*cli, "build", "fusion.yaml", "--sign-key", str(private)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert ", signed)" in built.stdout
    dumped = subprocess.run([*cli, "dump", "out/executable.popef"], cwd=tmp_path, capture_output=True, text=True)
    key = serialization.load_ssh_public_key(public.read_bytes())
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert f"Signature: ed25519, signed by key {fingerprint(raw)}" in dumped.stdout


def test_run_and_serve_take_trusted_keys_and_refuse_what_they_did_not_sign(tmp_path):
    import onnx

    onnx.save(scale_model(), tmp_path / "m.onnx")
    (tmp_path / "fusion.yaml").write_text("output_dir: out\nmodel_fusion:\n  - input_model: m.onnx\n")
    private, public = key_pair(tmp_path, "key")
    cli = [sys.executable, "-m", "popfuse.cli"]

    def popfuse(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert popfuse("build", "fusion.yaml").returncode == 0
    (tmp_path / "out" / "executable.popef").rename(tmp_path / "unsigned.popef")
    assert popfuse("build", "fusion.yaml", "--sign-key", str(private)).returncode == 0
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    run = ["--index", "0", "--input", "X=x.npy", "--trusted-key", str(public)]
    assert popfuse("run", "out/executable.popef", *run).returncode == 0
    refused = popfuse("run", "unsigned.popef", *run)
    assert refused.returncode == 1
    assert refused.stderr.startswith("popfuse run: error: unsigned.popef: the artifact is not signed")
    served = popfuse("serve", "unsigned.popef", "--trusted-key", str(public), "--port", "0", "--no-grpc")
    assert served.returncode == 1
    assert "popfuse serve: error: artifact 'unsigned' failed to load: unsigned.popef: the artifact is not signed" \
        in served.stderr
    from tests.runtime.server.conftest import RunningServer, server_settings

    server = RunningServer([tmp_path / "out" / "executable.popef"], server_settings(trusted_keys=(public,)))
    try:
        with urllib.request.urlopen(f"http://{server.url}/v2/health/ready", timeout=30) as ready:
            assert ready.status == 200
    finally:
        server.stop()
