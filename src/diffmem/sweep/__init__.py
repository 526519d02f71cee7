"""Sweeps and comparisons: the memorization/quality trade-off of every method, and choosing sigma_n.

- spec.py: `SweepConfig`, `SweepPoint`, `EvalOptions`, the grid (`sweep_points`, `point_config`).
- runner.py: `run_sweep` (train, sample, audit, measure every point; resumable; `jobs` processes).
- evaluation.py: `evaluate_run` (one finished run -> one result row in RUN/result.json).
- results.py: rows, results.csv/json, seed-averaged table, paper-shaped markdown.
- pareto.py: `pareto_front`, `plot_pareto`, the rule of thumb `choose_sigma_n`.
- compare.py: `collect_rows` from sweeps, runs and audit folders.
"""

from diffmem.sweep.compare import collect_rows, expand_paths
from diffmem.sweep.evaluation import evaluate_run, run_info
from diffmem.sweep.pareto import choose_sigma_n, pareto_front, plot_pareto, rule_of_thumb_text
from diffmem.sweep.results import format_table, markdown_tables, read_results, summarize, write_results
from diffmem.sweep.runner import SweepResult, default_grids, run_point, run_sweep, write_outputs
from diffmem.sweep.spec import EvalOptions, SweepConfig, SweepPoint, point_config, sweep_points, validate_sweep

__all__ = [
    "EvalOptions",
    "SweepConfig",
    "SweepPoint",
    "SweepResult",
    "choose_sigma_n",
    "collect_rows",
    "default_grids",
    "evaluate_run",
    "expand_paths",
    "format_table",
    "markdown_tables",
    "pareto_front",
    "plot_pareto",
    "point_config",
    "read_results",
    "rule_of_thumb_text",
    "run_info",
    "run_point",
    "run_sweep",
    "summarize",
    "sweep_points",
    "validate_sweep",
    "write_outputs",
    "write_results",
]
