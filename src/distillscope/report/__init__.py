"""The self-contained HTML report of a run, made from its ``results.json`` alone.

``distillscope report RUN_DIR`` calls :func:`render_report`; :func:`render_html` renders parsed
results to a string, and :func:`load_results` reads and checks a run's results file.
"""

from distillscope.report.html import REPORT_FILE, render_html, render_report
from distillscope.results import RESULTS_FILE, load_results

__all__ = ["REPORT_FILE", "RESULTS_FILE", "load_results", "render_html", "render_report"]
