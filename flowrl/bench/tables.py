"""How the benchmarks print their numbers: rich tables headed by a title, floats to three significant digits."""

from __future__ import annotations

from rich.table import Table


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A rich table; floats are printed with three significant digits (thousands separated above 1,000)."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for row in rows:
        t.add_row(*[_fmt(v) for v in row])
    return t


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return "n/a" if v is None else str(v)
