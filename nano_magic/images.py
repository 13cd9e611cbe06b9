"""Pictures sent with a prompt: figures, PIL images, arrays, bytes, files and URLs, as wire content parts and saved records.

Pillow reads, checks and downscales every picture that is not a URL, and matplotlib draws figures; both are optional
(`pip install "nano-magic[images]"`) and imported only when a picture needs them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .imagestore import ImageStore

__all__ = [
    "MAX_SIDE",
    "NOT_AVAILABLE",
    "BadImage",
    "Picture",
    "from_record",
    "image_fields",
    "image_tokens",
    "part_tokens",
    "picture_from",
    "record_line",
    "record_ok",
    "shorten_data_urls",
    "thumbnail_markdown",
    "user_message",
]

# OpenAI's vision guide ("Calculating costs"): in high detail an image is first scaled to fit within a 2048 x 2048
# square, and patch-based models keep at most 1536 patches of 32 px (about 1254 x 1254). Pixels beyond 2048 on a side
# are thrown away by the server whatever the model, so sending them only adds upload time and request size (OpenAI
# caps a request's images at 50 MB): a larger picture is downscaled here to 2048 on its longest side.
MAX_SIDE = 2048
NOT_AVAILABLE = "[image not available]"
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"))
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadImage(ValueError):
    """A picture that cannot be sent, said in one line; nothing is sent."""


@dataclass(frozen=True)
class Picture:
    """One picture for a prompt: PNG/JPEG/GIF/WebP bytes with their size, or an http(s) URL passed on as it is."""

    media_type: str = ""
    data: bytes = field(default=b"", repr=False)
    width: int = 0
    height: int = 0
    url: str | None = None
    detail: str = "auto"

    @property
    def sha256(self) -> str:
        """The hash that names the bytes in the store and in saved turns."""
        return hashlib.sha256(self.data).hexdigest()

    def source(self) -> str:
        """What goes in the request: the URL, or a base64 data URL."""
        return self.url or f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def record(self) -> dict[str, Any]:
        """What a saved turn keeps: the hash, media type, size in bytes and pixels, and the detail; never the bytes."""
        if self.url:
            return {"url": self.url, "detail": self.detail}
        return {"sha256": self.sha256, "media_type": self.media_type, "size": len(self.data),
                "width": self.width, "height": self.height, "detail": self.detail}


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise BadImage('--image needs Pillow to read pictures: pip install "nano-magic[images]" (or pip install pillow).') from None
    return Image


def picture_from(value: Any, label: str, detail: str = "auto") -> Picture:
    """A picture from a figure, PIL image, (H, W, 3|4) uint8 array, image bytes, a path or an http(s) URL; BadImage otherwise."""
    if isinstance(value, Picture):
        return value
    if isinstance(value, str) and re.match(r"https?://", value):
        return Picture(url=value, detail=detail)
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise BadImage(f"--image {label}: there is no file {path}.")
        return _from_bytes(path.read_bytes(), label, detail)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(value), label, detail)
    if hasattr(value, "savefig"):  # a matplotlib Figure, or anything drawn the same way
        return _saved(lambda buffer: value.savefig(buffer, format="png"), label, detail, "the figure could not be drawn")
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return _from_array(value, label, detail)
    if hasattr(value, "save"):  # a PIL image, or anything that saves itself as PNG the same way
        return _saved(lambda buffer: value.save(buffer, format="PNG"), label, detail, "it could not be saved as PNG")
    raise BadImage(f"--image {label}: a {type(value).__name__} is not a figure, image, (H, W, 3|4) uint8 array, image bytes, path or URL.")


def _from_array(array: Any, label: str, detail: str) -> Picture:
    shape, dtype = tuple(array.shape), str(array.dtype)
    if len(shape) != 3 or shape[2] not in (3, 4) or dtype != "uint8":
        raise BadImage(f"--image {label}: an array must have the shape (H, W, 3) or (H, W, 4) and dtype uint8, not {shape} {dtype}.")
    image = _pil().fromarray(array, "RGB" if shape[2] == 3 else "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _from_bytes(buffer.getvalue(), label, detail)


def _kind(data: bytes) -> str | None:
    """The format the first bytes announce, before any decoder reads them."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _saved(save: Callable[[io.BytesIO], object], label: str, detail: str, failure: str) -> Picture:
    """The picture a user object writes into a buffer; its own exception, whatever it is, becomes one line."""
    buffer = io.BytesIO()
    try:
        save(buffer)
    except Exception as exc:
        raise BadImage(f"--image {label}: {failure} ({type(exc).__name__}: {exc}).") from None
    return _from_bytes(buffer.getvalue(), label, detail)


def _from_bytes(data: bytes, label: str, detail: str) -> Picture:
    """Checked by its signature and by Pillow, downscaled to MAX_SIDE on its longest side when larger."""
    kind = _kind(data)
    if kind is None:
        raise BadImage(f"--image {label}: this is not a PNG, JPEG, GIF or WebP image.")
    Image = _pil()
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise BadImage(f"--image {label}: the {kind} image cannot be read ({type(exc).__name__}: {exc}).") from None
    width, height = image.size
    if max(width, height) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.convert("RGB" if kind == "JPEG" else "RGBA").resize(size, Image.LANCZOS)
        kind = "JPEG" if kind == "JPEG" else "PNG"  # a GIF or WebP is re-encoded as PNG, which every API takes
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        data, (width, height) = buffer.getvalue(), size
    return Picture(MEDIA_TYPES[kind], data, width, height, detail=detail)


_IMAGE_FIELD = re.compile(r"(?<!\{)\{image:([^{}\n]+)\}(?!\})")  # `{image:column}`, not inside `{{…}}`


def image_fields(template: str, names: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """A --map template without its `{image:column}` placeholders, and the positions of those columns; BadImage for an unknown one."""
    columns = []
    for match in _IMAGE_FIELD.finditer(template):
        name = match.group(1).strip()
        if name not in names:
            available = ", ".join(f"{{image:{n}}}" for n in names)
            raise BadImage(f"The template uses {{image:{name}}}, which the data does not have; available: {available}.")
        columns.append(list(names).index(name))
    return _IMAGE_FIELD.sub("", template).strip(), tuple(columns)


def record_ok(record: Any) -> bool:
    """Whether a saved record (untrusted: a shared notebook's metadata) has the shape `Picture.record` gives."""
    if not isinstance(record, Mapping) or not isinstance(record.get("detail", "auto"), str):
        return False
    if "url" in record:
        return isinstance(record["url"], str) and re.match(r"https?://", record["url"]) is not None
    numbers = [record.get(k) for k in ("size", "width", "height")]
    return (isinstance(record.get("sha256"), str) and _SHA256.fullmatch(record["sha256"]) is not None
            and record.get("media_type") in MEDIA_TYPES.values()
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers))


def from_record(record: Mapping[str, Any], store: ImageStore) -> Picture | None:
    """The picture a saved record names, with its bytes from the store; None when the store does not have them."""
    if record.get("url"):
        return Picture(url=str(record["url"]), detail=str(record.get("detail", "auto")))
    data = store.get(str(record["sha256"]))
    if data is None:
        return None
    return Picture(str(record["media_type"]), data, int(record["width"]), int(record["height"]), detail=str(record.get("detail", "auto")))


def user_message(text: str, pictures: Iterable[Picture | None], api: str) -> dict[str, Any]:
    """The user message of a prompt with pictures: Chat `image_url` parts or Responses `input_image` items; a missing one is text."""
    pictures = list(pictures)
    if not pictures:
        return {"role": "user", "content": text}
    text_type = "input_text" if api == "responses" else "text"
    parts: list[dict[str, Any]] = [{"type": text_type, "text": text}]
    for picture in pictures:
        if picture is None:
            parts.append({"type": text_type, "text": NOT_AVAILABLE})
        elif api == "responses":
            parts.append({"type": "input_image", "image_url": picture.source(), "detail": picture.detail})
        else:
            parts.append({"type": "image_url", "image_url": {"url": picture.source(), "detail": picture.detail}})
    return {"role": "user", "content": parts}


# Image tokens, from OpenAI's vision guide ("Calculating costs", platform.openai.com/docs/guides/images-vision):
# patch models count 32 x 32 patches (at most 1536) times a multiplier; tile models count a base plus a price per
# 512 px tile after fitting the image in 2048 x 2048 and its shortest side to 768 (detail low: the base alone).
PATCH_MULTIPLIER = {"gpt-4.1-nano": 2.46, "gpt-4.1-mini": 1.62, "gpt-5-nano": 2.46, "gpt-5-mini": 1.62, "o4-mini": 1.72}
TILES = {"gpt-4o": (85, 170), "gpt-4.1": (85, 170), "gpt-4.5": (85, 170), "gpt-4o-mini": (2833, 5667),
         "gpt-5": (70, 140), "o1": (75, 150), "o3": (75, 150)}
MAX_PATCHES = 1536


def image_tokens(width: int, height: int, model: str, detail: str = "auto") -> int | None:
    """Input tokens of one image on `model` by OpenAI's documented formula; None when the model's formula is not known."""
    base = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model.rsplit("/", 1)[-1])
    if base in PATCH_MULTIPLIER:
        return math.ceil(_patches(width, height) * PATCH_MULTIPLIER[base])
    if base in TILES:
        fixed, per_tile = TILES[base]
        if detail == "low":
            return fixed
        return fixed + per_tile * _tiles(width, height)
    return None


def _patches(width: int, height: int) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches <= MAX_PATCHES:
        return patches
    shrink = math.sqrt(32 * 32 * MAX_PATCHES / (width * height))
    shrink *= min(math.floor(width * shrink / 32) / (width * shrink / 32), math.floor(height * shrink / 32) / (height * shrink / 32))
    return min(math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32), MAX_PATCHES)


def _tiles(width: int, height: int) -> int:
    fit = min(1.0, 2048 / max(width, height))
    wide, high = width * fit, height * fit
    short = min(1.0, 768 / min(wide, high))
    return math.ceil(wide * short / 512) * math.ceil(high * short / 512)


def part_tokens(part: Mapping[str, Any], model: str) -> int | None:
    """The tokens of one image content part of a request (either API); None when they cannot be known."""
    if part.get("type") == "input_image":
        source, detail = part.get("image_url"), part.get("detail", "auto")
    else:
        inner = part.get("image_url") or {}
        source, detail = inner.get("url"), inner.get("detail", "auto")
    size = _data_url_size(source) if isinstance(source, str) else None
    return None if size is None else image_tokens(*size, model, str(detail))


def _data_url_size(url: str) -> tuple[int, int] | None:
    """The pixel size of a data URL's image (Pillow reads the header only); None for a remote URL or without Pillow."""
    if not url.startswith("data:") or "base64," not in url:
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(url.split("base64,", 1)[1]))) as image:
            return image.size
    except Exception:
        return None


def shorten_data_urls(value: Any, keep: int = 40) -> Any:
    """A request body with each data URL cut to its first `keep` characters and the size of what it holds, for --dry-run."""
    if isinstance(value, dict):
        return {k: shorten_data_urls(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten_data_urls(v, keep) for v in value]
    if isinstance(value, str) and value.startswith("data:") and len(value) > keep:
        encoded = value.split(",", 1)[-1]
        size = len(encoded) * 3 // 4 - encoded[-2:].count("=")
        return f"{value[:keep]}… ({size:,} bytes)"
    return value


def record_line(record: Mapping[str, Any]) -> str:
    """A saved picture as plain text: its URL, or its media type, pixel size and short hash."""
    if record.get("url"):
        return f"[image {record['url']}]"
    return f"[image {record.get('media_type')} {record.get('width')}×{record.get('height')} sha256 {str(record.get('sha256'))[:12]}]"


def thumbnail_markdown(record: Mapping[str, Any], store: ImageStore, side: int = 128) -> str | None:
    """A saved picture in a Markdown transcript: a small PNG thumbnail of the stored bytes, or None when there are none."""
    picture = None if record.get("url") else from_record(record, store)
    if picture is None:
        return None
    try:
        image = _pil().open(io.BytesIO(picture.data))
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, format="PNG")
    except Exception:  # bytes that no longer decode, or no Pillow: the text line instead
        return None
    return f"![image](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"
