"""Small inline previews of drawn images in a terminal: kitty's graphics protocol, iTerm2's
inline images, or sixel, whichever the terminal speaks; nothing where it speaks none.

Detection is by environment (no terminal queries, which would need raw mode and a reply
that may never come); `python -m chat --preview` overrides it.
"""

from __future__ import annotations

import base64
import io
import os

from PIL import Image

PROTOCOLS = ("kitty", "iterm", "sixel")


def detect(environ: dict[str, str] | None = None) -> str | None:
    """The protocol this terminal is known to support, from its environment variables."""
    env = os.environ if environ is None else environ
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if "KITTY_WINDOW_ID" in env or "kitty" in term or program == "ghostty":
        return "kitty"
    if program in ("iTerm.app", "WezTerm"):
        return "iterm"
    if any(name in term for name in ("foot", "mlterm", "yaft", "contour")) or env.get("SIXEL") == "1":
        return "sixel"
    return None


def _png(image: Image.Image, size: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").resize((size, size), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def kitty(image: Image.Image, size: int = 128) -> str:
    """Kitty graphics protocol: the PNG, base64, in chunks of at most 4096 bytes."""
    data = base64.b64encode(_png(image, size)).decode()
    chunks = [data[start:start + 4096] for start in range(0, len(data), 4096)]
    out = []
    for index, chunk in enumerate(chunks):
        more = 1 if index < len(chunks) - 1 else 0
        control = f"a=T,f=100,m={more}" if index == 0 else f"m={more}"
        out.append(f"\033_G{control};{chunk}\033\\")
    return "".join(out)


def iterm(image: Image.Image, size: int = 128) -> str:
    """iTerm2 (and WezTerm) inline image: OSC 1337 with the base64 PNG."""
    data = _png(image, size)
    return f"\033]1337;File=inline=1;size={len(data)};width={size}px;height={size}px;preserveAspectRatio=1:" \
           f"{base64.b64encode(data).decode()}\a"


def sixel(image: Image.Image, size: int = 128, colours: int = 64) -> str:
    """DEC sixel: the image quantised to `colours`, six pixel rows per band, run-length coded."""
    small = image.convert("RGB").resize((size, size), Image.NEAREST).quantize(colours)
    palette = small.getpalette()[:3 * colours]
    pixels = small.load()
    width, height = small.size
    out = ["\033Pq", f'"1;1;{width};{height}']
    used = sorted({pixels[x, y] for y in range(height) for x in range(width)})
    for index in used:
        r, g, b = (round(value * 100 / 255) for value in palette[3 * index:3 * index + 3])
        out.append(f"#{index};2;{r};{g};{b}")
    for top in range(0, height, 6):
        band = []
        for index in used:
            row = "".join(chr(63 + sum(1 << bit for bit in range(6)
                                       if top + bit < height and pixels[x, top + bit] == index))
                          for x in range(width))
            if row.strip("?"):
                band.append(f"#{index}{_run_length(row)}")
        out.append("$".join(band) + "-")
    out.append("\033\\")
    return "".join(out)


def _run_length(row: str) -> str:
    out, start = [], 0
    while start < len(row):
        end = start
        while end < len(row) and row[end] == row[start]:
            end += 1
        count = end - start
        out.append(f"!{count}{row[start]}" if count > 3 else row[start] * count)
        start = end
    return "".join(out)


def render(image: Image.Image, protocol: str, size: int = 128) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown preview protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    return {"kitty": kitty, "iterm": iterm, "sixel": sixel}[protocol](image, size)
