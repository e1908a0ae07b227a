"""`vggnet search --html`: one self-contained page showing the query and its neighbours as thumbnails."""

from __future__ import annotations

import base64
import html
import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..data.datasets import to_rgb
from ..io import write_text
from .search import Neighbour

THUMB_SIDE = 192  # pixels, the longer side of a thumbnail (JPEG quality 85: about 10 kB each)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.2em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {side}px; }}
figure img {{ max-width: {side}px; max-height: {side}px; display: block; border: 1px solid #ccc; }}
figcaption {{ font-size: 12px; word-break: break-all; }}
.query img {{ border: 3px solid #c33; }}
.missing {{ width: {side}px; height: 60px; background: #eee; display: flex; align-items: center; justify-content: center; }}
</style></head>
<body>
<h1>{title}</h1>
<p>{note}</p>
<div class="grid">
{figures}
</div>
</body></html>
"""


def thumbnail_uri(path: str | os.PathLike[str]) -> str | None:
    """A JPEG thumbnail of the photo as a data: URI, or None when it cannot be read.

    Only a regular file is opened: a collection names its photos, and one from someone else may name a FIFO
    or a device (/dev/stdin), which would wait forever. Anything else is decoded as an image and re-encoded,
    so nothing but pixels of a decodable image reaches the page.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
            im.load()
            rgb = to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    rgb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(uri: str | None, caption: str, css: str) -> str:
    image = f'<img src="{uri}" alt="">' if uri else '<div class="missing">unreadable</div>'
    return f'<figure class="{css}">{image}<figcaption>{html.escape(caption)}</figcaption></figure>'


def write_results_page(
    out: str | os.PathLike[str], query: str | os.PathLike[str], root: Path, found: Sequence[Neighbour], note: str = ""
) -> Path:
    """The page: the query first, then each neighbour with its rank, cosine similarity and distance."""
    figures = [_figure(thumbnail_uri(query), f"query: {query}", "query")]
    figures += [
        _figure(
            thumbnail_uri(root / n.path),
            f"{n.rank}. {n.path} (cos {n.similarity:.4f}, distance {n.distance:.4f})",
            "hit",
        )
        for n in found
    ]
    title = f"{len(found)} nearest photos to {Path(query).name}"
    text = PAGE.format(title=html.escape(title), note=html.escape(note), side=THUMB_SIDE, figures="\n".join(figures))
    return write_text(out, text)
