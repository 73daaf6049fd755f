"""Run directories (atomic writes, metrics, summaries) and HTML reports."""
from ..cells import Cells
from .report import page_html, render_report, run_page_sections, write_page, write_run_page
from .rundir import Run, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["Cells", "Run", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "page_html",
           "render_report", "run_page_sections", "write_page", "write_run_page"]
