"""`vggnet view`: one self-contained HTML page with a VGG's layers, their numbers, and what they see in photos."""

from .page import render, view_data, write_view

__all__ = ["render", "view_data", "write_view"]
