"""The images of a benchmark: each distinct image written once, in its own format, named by the
row (or group) that uses it first."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

from workers.data.benchmarks.common import RowError, SourceRow

_IMAGE_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp"}
_IMAGE_SUFFIX |= {"WEBP": ".webp", "TIFF": ".tif"}


def safe_name(name: str) -> str:
    """A file name from a row id: path separators and odd characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


class Images:
    """Writes each distinct image once under ``folder``, named by the row (or group) that uses
    it first, in its own format (the bytes are kept; they are decoded once, to check them and to
    learn the format)."""

    def __init__(self, folder: Path, src: Path) -> None:
        self.folder = folder
        self.src = src
        self.by_hash: dict[str, Path] = {}
        self.by_key: dict[str, tuple[Path, str]] = {}
        self.names: set[str] = set()
        self.written = 0
        self.shared = 0  # rows whose image another row had already written
        self.key_mismatch = 0

    def write(self, row: SourceRow, column: str, name: str, key: str | None = None) -> Path:
        """The absolute path of the row's image in ``column``. Rows with the same ``key`` (MME's
        question pair) share one file; identical bytes are written once whatever the key."""
        data = self._bytes(row, column)
        digest = hashlib.sha1(data).hexdigest()
        if key is not None and key in self.by_key:
            path, first = self.by_key[key]
            self.shared += 1
            self.key_mismatch += digest != first
            return path
        known = self.by_hash.get(digest)
        if known is None:
            path = self.by_hash[digest] = self._store(data, column, name)
        else:
            path = known
            self.shared += 1
        if key is not None:
            self.by_key[key] = (path, digest)
        return path

    def _store(self, data: bytes, column: str, name: str) -> Path:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                fmt = im.format or ""
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise RowError(column, f"the image does not decode ({e})") from None
        suffix = _IMAGE_SUFFIX.get(fmt, f".{fmt.lower()}" if fmt else ".img")
        stem = safe_name(name)
        if Path(stem).suffix.lower() in {*_IMAGE_SUFFIX.values(), ".jpeg"}:
            stem = Path(stem).stem  # MME's ids are file names
        unique, n = stem, 1
        while unique in self.names:
            n += 1
            unique = f"{stem}-{n}"
        self.names.add(unique)
        target = (self.folder / f"{unique}{suffix}").resolve()
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        self.written += 1
        return target

    def _bytes(self, row: SourceRow, column: str) -> bytes:
        """The image bytes of an HF Image value: a ``{bytes, path}`` struct (bytes may be null,
        then the path is read, relative to the source file's folder or the source), raw bytes,
        or a path."""
        value = row.values.get(column)
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if not isinstance(value, str) or not value:
            raise RowError(column, f"no image: neither bytes nor a path ({_short(value)})")
        raw = Path(value)
        bases = [raw] if raw.is_absolute() else [row.file.parent / raw, self.src / raw]
        for candidate in bases:
            if candidate.is_file():
                return candidate.read_bytes()
        tried = ", ".join(str(b) for b in bases)
        raise RowError(column, f"the image has no bytes and its path is not found (tried {tried})")


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
