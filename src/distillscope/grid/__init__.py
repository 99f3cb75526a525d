"""Study grids: one config expanded over seeds, temperatures and methods, run cell by cell.

``expand`` turns a config's ``grid:`` section into validated cells, ``runner`` runs them (in
parallel processes with ``jobs > 1``; finished cells are never recomputed, killed ones resume)
and ``summary`` writes ``grid.json`` with mean and spread over seeds, rendered by
:mod:`distillscope.report.grid`. See ``docs/grids.md``.
"""

from distillscope.grid.expand import Axis, Cell, Grid, expand_grid, is_grid_config, load_grid
from distillscope.grid.runner import GridCellError, resume_grid, run_grid

__all__ = [
    "Axis",
    "Cell",
    "Grid",
    "GridCellError",
    "expand_grid",
    "is_grid_config",
    "load_grid",
    "resume_grid",
    "run_grid",
]
