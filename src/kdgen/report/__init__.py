"""What a run shows a person: tables, sample grids, and (report page, plots) built from metrics.json."""

from .tables import format_table, save_grid, save_side_by_side, to_pil

__all__ = ["format_table", "save_grid", "save_side_by_side", "to_pil"]
