"""Avatar images: any readable image as PNG bytes, once, through Pillow."""

from __future__ import annotations

import io

from PIL import Image

from errors import PersonaError
from personas.png import PNG_SIGNATURE


def as_png(image: bytes, name: str) -> bytes:
    """PNG bytes as they are; other formats (JPEG, WebP) converted once through Pillow."""
    if image.startswith(PNG_SIGNATURE):
        return image
    try:
        with Image.open(io.BytesIO(image)) as opened:
            out = io.BytesIO()
            opened.save(out, format="PNG")
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PersonaError(f"{name}: avatar is not a readable image ({exc})") from None
