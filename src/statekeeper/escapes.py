"""Text callers wrote, shown as text: the characters a screen would obey, escaped.

Lock fields, resource names, attribute values and audit details are written by
callers, some by anyone who may LOCK or who can write a lock table's items
directly. A terminal acts on a control character instead of showing it (an ESC
sequence can recolour, clear the screen or retitle the window), and a browser as
much as a terminal reorders what follows a bidirectional formatting character
(U+202E shows the rest of a cell reversed). The CLI and the web UI show such a
character as its escape, ``\\x1b`` or ``\\u202e``, through :func:`shown`.
"""

from __future__ import annotations

__all__ = ["shown"]

#: The C0 controls but tab and newline, DEL, the C1 controls, and Unicode's
#: bidirectional formatting characters, each mapped to its escape.
_UNSHOWN: dict[int, str] = {
    c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)
}
_UNSHOWN.update(
    {
        c: f"\\u{c:04x}"
        for c in (0x61C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
    }
)


def shown(text: str) -> str:
    """``text`` with every character a screen would obey written as its escape."""
    return text.translate(_UNSHOWN)
