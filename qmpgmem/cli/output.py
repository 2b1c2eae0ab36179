"""Consoles and tables that stay readable when piped.

Why: rich wraps to 80 columns when stdout is not a terminal, so ``qmpgmem probe | less`` or a
CI log got each long source or detail folded into fragments over several lines. On a
terminal, tables fit its width as before. Piped or redirected, every row is one line, as long
as its own text: no cell is split, ``grep`` finds a row whole, and no line is padded out to
the widest row (the table loses its outer edge and each line its trailing blanks).
"""

from __future__ import annotations

from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["PIPED_WIDTH", "print_table", "table_console"]

#: The width a console that is not a terminal renders at: wider than any row, so no table
#: row wraps (a table is as wide as its widest row, not this).
PIPED_WIDTH: Final = 100_000


def table_console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console on stdout (or stderr): the terminal's width, or :data:`PIPED_WIDTH`
    when the stream is not a terminal (``COLUMNS`` is not consulted then)."""
    console = Console(stderr=stderr, **kwargs)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    return console


def print_table(console: Console, table: Table) -> None:
    """Print ``table``: as it is on a terminal; otherwise its title on a line of its own,
    then one line per row, without the table's outer edge, trailing blanks dropped and the
    header's rule as long as the header."""
    if console.is_terminal:
        console.print(table)
        return
    title, table.title, table.show_edge = table.title, None, False
    with console.capture() as capture:
        if title is not None:  # on a line of its own: a table's title is centred or padded
            console.print(Text(title) if isinstance(title, str) else title, style="italic")
        console.print(table)
    lines = [line.rstrip() for line in capture.get().splitlines()]
    header = 1 if title is not None else 0
    if table.show_header and len(lines) > header:  # the rule under the header: as long as it
        width = len(lines[header])
        lines = [line[:width] if _is_rule(line) else line for line in lines]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _is_rule(line: str) -> bool:
    """A line drawn of box characters only (rows always have blanks: the cells' padding)."""
    return bool(line) and all(0x2500 <= ord(c) <= 0x257F or c in "-=+|" for c in line)
