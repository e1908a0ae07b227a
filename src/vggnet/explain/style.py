"""What the report's figures and prose share: a colour and a name per layer kind, and how numbers are written."""

from __future__ import annotations

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
# kind -> (fill, stroke), shared by the SVGs and the plots
PALETTE = {
    "conv": ("#d3e3f4", "#3b6fa8"),
    "conv1x1": ("#cdeee8", "#1f8a7a"),
    "pool": ("#fde2c6", "#d46f00"),
    "lrn": ("#ecdcf0", "#8a4f99"),
    "fc": ("#d8eed2", "#3f8f34"),
    "io": ("#eeeeee", "#666666"),
}
KIND_NAMES = {
    "conv": "3×3 convolution",
    "conv1x1": "1×1 convolution",
    "pool": "max-pool",
    "lrn": "LRN",
    "fc": "fully connected",
}


def shape_text(shape: tuple[int, int, int]) -> str:
    """C × H × W, or just C for a vector."""
    c, h, w = shape
    return f"{c}" if h == w == 1 else f"{c} × {h} × {w}"


def mib(n: int) -> str:
    """Bytes as MiB with two decimals (the report's memory unit)."""
    return f"{n / 2**20:.2f}"


def kib(n: int) -> str:
    """Bytes as KiB with one decimal and thousands separators."""
    return f"{n / 2**10:,.1f}"


def percent(part: float, whole: float) -> str:
    """A share with one decimal and a percent sign."""
    return f"{100 * part / whole:.1f}%"
