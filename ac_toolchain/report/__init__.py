"""Reports of a run: the typed record (records.py, written as report.json) and report.md rendered from it."""

from ac_toolchain.report.records import Report, read_report
from ac_toolchain.report.render import render_markdown, write_report

__all__ = ["Report", "read_report", "render_markdown", "write_report"]
