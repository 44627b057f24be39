"""Reports of a run: report.json (machine-readable) and report.md (for a person)."""

from ac_toolchain.report.render import build_report, render_markdown, write_report

__all__ = ["build_report", "render_markdown", "write_report"]
