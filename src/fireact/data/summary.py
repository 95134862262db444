"""The table build_data prints at the end: counts per task × method in each source file or
released set, what the pool has, what the mix took; then the evaluation-set overlaps."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fireact import terminal
from fireact.data.build import BuildResult
from fireact.data.mix import count_cells


def print_summary(result: BuildResult, console: Console | None = None) -> None:
    console = console or terminal.console()
    selected = count_cells(result.trajectories)
    cells = sorted(set(result.available) | set(selected) | {c for t in result.loaded.tables.values() for c in t})

    # Source names (released sets, file paths) are long: number the columns, name them below.
    sources = [f"[{number}]" for number in range(1, len(result.loaded.tables) + 1)]
    counts = Table(title="Trajectories per task × method")
    for column in ("task", "method", *sources, "available", "selected"):
        counts.add_column(column, justify="left" if column in ("task", "method") else "right")
    for cell in cells:
        per_table = [str(table.get(cell, 0)) for table in result.loaded.tables.values()]
        counts.add_row(*cell, *per_table, str(result.available.get(cell, 0)), str(selected.get(cell, 0)))
    totals = [str(sum(table.values())) for table in result.loaded.tables.values()]
    counts.add_row("total", "", *totals, str(sum(result.available.values())), str(len(result.trajectories)), style="bold")
    terminal.show(counts, to=console)
    for label, name in zip(sources, result.loaded.tables):
        console.print(f"  {label} {name}")

    if result.pool_overlaps:
        overlaps = Table(title="Training questions that are evaluation questions (normalised text)",
                         caption="questions: evaluation questions found; trajectories: training trajectories on them")
        overlaps.add_column("evaluation set", no_wrap=True)
        for column in ("questions", "trajectories", "selected"):
            overlaps.add_column(column, justify="right")
        for in_pool, in_built in zip(result.pool_overlaps, result.overlaps):
            overlaps.add_row(in_pool.eval_set, str(len(in_pool.questions)), str(len(in_pool.trajectories)),
                             str(len(in_built.trajectories)))
        terminal.show(overlaps, to=console)

    for note in result.loaded.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))  # a note names files: no markup read in it
    if result.out_dir is not None:
        paired = f" and {len(result.pairs)} preference pairs" if "pairs.jsonl" in result.outputs else ""
        console.print(f"wrote {len(result.trajectories)} trajectories{paired} to {result.out_dir}: "
                      + ", ".join(result.outputs) + ", manifest.json")
