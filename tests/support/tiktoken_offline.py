"""o200k_base for tiktoken without the internet: the copy that the `bpe-openai` wheel ships, put in a tiktoken cache dir."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

__all__ = ["O200K_URL", "O200K_SHA256", "provide_o200k", "use_offline_o200k"]

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def provide_o200k(cache_dir: Path) -> Path | None:
    """Write o200k_base where tiktoken looks for it (the sha1 of its URL) in `cache_dir`; None without bpe-openai."""
    target = cache_dir / hashlib.sha1(O200K_URL.encode()).hexdigest()
    if target.exists():
        return cache_dir
    spec = importlib.util.find_spec("bpe_openai")  # finds the wheel without importing it
    packed_path = Path(spec.origin).parent / "data" / "o200k_base.tiktoken.gz" if spec and spec.origin else None
    if packed_path is None or not packed_path.exists():
        return None
    packed = packed_path.read_bytes()
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        return None  # a different vocabulary: tiktoken would refuse it anyway
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return cache_dir


def use_offline_o200k(cache_dir: Path | None = None) -> Path | None:
    """Provide o200k_base in `cache_dir` (a temporary one by default) and point TIKTOKEN_CACHE_DIR at it, here and in
    the processes started from here; None without bpe-openai."""
    found = provide_o200k(cache_dir or Path(tempfile.gettempdir()) / "nano-magic-tiktoken")
    if found is not None:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(found)
    return found
