"""The mark the tools' figure files carry in their head (sp-simulate's Gantt, sp-validate's figure).

A command that replaces a fixed-named file in a folder the user names (gantt.png,
predicted_vs_measured.png) replaces it only when it is an earlier run's: its head holds the mark
(sp_planner.fileio.bears_signature). A PNG or SVG of the user's that bears one of those names stays.
"""

from __future__ import annotations

FIGURE_CREATOR = "sp-planner"
# The matplotlib savefig metadata key that carries the creator, by format: PNG writes it as a
# tEXt chunk straight after the header (before the image data), SVG in its <metadata> RDF before
# the first drawing, both well inside the head a signature check reads.
_CREATOR_KEY = {"png": "Software", "svg": "Creator"}


def figure_metadata(fmt: str) -> dict[str, str]:
    """savefig's metadata for a figure file of format `fmt` ("png" or "svg"): the creator mark."""
    return {_CREATOR_KEY[fmt]: FIGURE_CREATOR}


def figure_signature(fmt: str) -> bytes:
    """The bytes figure_metadata(fmt) puts in the head of the file."""
    if fmt == "png":  # a tEXt chunk: its type, the keyword, a NUL, the text (Latin-1)
        return f"tEXt{_CREATOR_KEY[fmt]}\0{FIGURE_CREATOR}".encode("latin-1")
    if fmt == "svg":  # matplotlib writes the creator as <dc:creator><cc:Agent><dc:title>...
        return f"<dc:title>{FIGURE_CREATOR}</dc:title>".encode()
    raise ValueError(f"a figure file is png or svg, got {fmt}")
