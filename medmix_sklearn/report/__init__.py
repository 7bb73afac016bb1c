"""A self-contained HTML report of held-out predictions, for people to read."""

from ._html import render_report, write_report

__all__ = ["render_report", "write_report"]
