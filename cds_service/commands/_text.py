"""Text from outside (a caller's audit fields, an ECG file's statements) as the terminal
tables show it: plain text, never Rich markup, no control character.

Rich reads ``[link=...]`` and ``[bold]`` in a cell as markup and passes terminal escapes
(``ESC[2J`` clears the screen, ``ESC[1A ESC[2K`` overwrite the rows above) and bidi
overrides through: whoever wrote the text could restyle or hide what the reader sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Rich is imported where a table is printed, not on the CLI's start path
    from rich.text import Text


def plain(value: str) -> Text:
    """``value`` as a Rich cell: no markup, each non-printable character shown as ``?``
    but line breaks (a cell's lines stay inside the cell)."""
    from rich.text import Text

    return Text("".join(c if c.isprintable() or c == "\n" else "?" for c in value))
