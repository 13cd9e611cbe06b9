"""The content-addressed store of picture bytes, beside the answer cache: saved turns keep only each picture's SHA-256."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from .config import default_cache_path

__all__ = ["ImageStore", "default_store"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ImageStore:
    """Files named by the SHA-256 of their bytes under `root` (`ab/abcdef…`); what is read back is checked against its name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path | None:
        """The file of a hash; None for anything that is not a hash (a name from a notebook must never become a path)."""
        return self.root / sha256[:2] / sha256 if _SHA256.fullmatch(sha256) else None

    def put(self, data: bytes) -> str:
        """Keep `data` (once: the same bytes have the same name); return its hash."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / sha256[:2] / sha256
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent)  # written whole, then renamed: never half a file
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        return sha256

    def get(self, sha256: str) -> bytes | None:
        """The bytes of a hash, or None when they are not here (another machine, an emptied cache) or do not match it."""
        path = self._path(sha256)
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        return data if hashlib.sha256(data).hexdigest() == sha256 else None


def default_store() -> ImageStore:
    """`images/` beside the default answer cache, in the user cache directory."""
    return ImageStore(default_cache_path().parent / "images")
