"""Run directories (atomic writes, metrics, summaries) and HTML reports."""
from .report import page_html, render_report, write_page
from .rundir import Run, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["Run", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "page_html",
           "render_report", "write_page"]
