"""Reports on sets of run folders: per-task tables with bootstrap CIs, rliable aggregates across tasks, figures.

``write_report(paths, out)`` is what ``tools/report.py`` calls: :mod:`flowrl.report.runs` finds and groups runs,
:mod:`flowrl.report.stats` computes the estimates, :mod:`flowrl.report.write` assembles every number (``report.json``),
:mod:`flowrl.report.figures` draws the PNGs and :mod:`flowrl.report.markdown` writes ``report.md``.
"""

from flowrl.report.write import compute, write_report

__all__ = ["compute", "write_report"]
