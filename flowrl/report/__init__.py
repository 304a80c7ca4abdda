"""Reports on sets of run folders: per-task tables with bootstrap CIs, rliable aggregates across tasks, figures.

``write_report(paths, out)`` is what ``tools/report.py`` calls; :mod:`flowrl.report.runs` finds and groups runs,
:mod:`flowrl.report.stats` computes, :mod:`flowrl.report.write` writes ``report.md``, ``report.json`` and PNGs.
"""

from flowrl.report.write import compute, write_report

__all__ = ["compute", "write_report"]
