"""What the report's figures and prose share: a colour and a name per layer kind, and how numbers are written."""

from __future__ import annotations

from ..lang import Strings

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
KINDS = ("conv", "conv1x1", "pool", "lrn", "fc")  # the drawn kinds, in legend order


def kind_names(s: Strings) -> dict[str, str]:
    """Each drawn kind's name in the figures' language: "conv" -> "3×3 convolution"."""
    return {k: s(f"kind_{k}") for k in KINDS}


def figure_fonts(s: Strings) -> tuple[str, ...]:
    """The fonts a language names for the glyphs DejaVu Sans lacks (Chinese: a CJK stack), in order."""
    return tuple(s.table["fonts"])


def installed_fonts(s: Strings) -> tuple[str, ...]:
    """The first of `figure_fonts` that matplotlib can draw with; () for a language that names none.

    Raises a one-line ValueError when the language names fonts and none is installed.
    """
    from matplotlib import font_manager

    wanted = figure_fonts(s)

    def installed() -> tuple[str, ...]:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return tuple(name for name in wanted if name in names)[:1]

    if wanted and not installed():
        # matplotlib lists the fonts once and keeps the list: add those installed since (a .ttc adds every face)
        known = {f.fname for f in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read: not one of ours
                    continue
    found = installed()
    if wanted and not found:
        raise ValueError(
            f"the {s.lang!r} figures need one of the fonts {', '.join(wanted)} (Debian: apt-get install fonts-noto-cjk)"
        )
    return found


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
