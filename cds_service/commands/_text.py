"""Text from outside (a caller's audit fields, an ECG file's statements) as the terminal
shows it: tables as plain text, never Rich markup; tables and JSON without a raw control
character.

Rich reads ``[link=...]`` and ``[bold]`` in a cell as markup and passes terminal escapes
(``ESC[2J`` clears the screen, ``ESC[1A ESC[2K`` overwrite the rows above) and bidi
overrides through: whoever wrote the text could restyle or hide what the reader sees.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Rich is imported where a table is printed, not on the CLI's start path
    from rich.text import Text


def plain(value: str) -> Text:
    """``value`` as a Rich cell: no markup, each non-printable character shown as ``?``
    but line breaks (a cell's lines stay inside the cell)."""
    from rich.text import Text

    return Text("".join(c if c.isprintable() or c == "\n" else "?" for c in value))


def terminal_json(value: Any, *, indent: int | None = None) -> str:
    """``json.dumps(value)`` with letters of any script as they are (a name in Greek stays
    readable) but every non-printable character escaped (``\\u009b``, ``\\u202e``).

    ``ensure_ascii=False`` escapes only C0 controls: C1 controls (U+0080-U+009F, the
    one-byte CSI U+009B among them) and bidi overrides reached the terminal raw. The output
    is the same JSON value; outside strings json.dumps writes only printable ASCII.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return "".join(c if c.isprintable() or c in "\n\t" else json.dumps(c)[1:-1] for c in text)
