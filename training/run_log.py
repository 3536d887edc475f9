"""log.csv of a training run: one row per logging window, consistent across resumes.

Both trainers write through here. A run killed after its last checkpoint has logged steps
that the resumed run trains again; `resume_log` drops those rows first, so the file reads as
one uninterrupted run.
"""

from __future__ import annotations

import csv
from pathlib import Path


def read_log(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a log CSV."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _rewrite(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Replace the file by `rows` under `columns` (values by name), through a renamed temporary file."""
    staging = path.with_name(path.name + ".tmp")
    with staging.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    staging.replace(path)


def append_row(path: Path, columns: list[str], row: dict) -> None:
    """Append one row (header first if the file is new). A file written with other columns
    (a run resumed by a newer version that logs more) is rewritten under the new header first,
    its old rows keeping their values by name."""
    new_file = not path.is_file()
    if not new_file:
        old_columns, rows = read_log(path)
        if old_columns != columns:
            _rewrite(path, columns, rows)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def resume_log(path: Path, step: int) -> None:
    """Keep only the rows up to `step` (the step the run resumes from; 0 starts afresh)."""
    if not path.is_file():
        return
    columns, rows = read_log(path)
    _rewrite(path, columns, [row for row in rows if row.get("step", "").isdigit() and int(row["step"]) <= step])


def log_loss_figure(panels: int, width: float):
    """A figure of `panels` side-by-side axes with log-scaled y, tick labels in plain text and a
    layout by fixed margins. Matplotlib's defaults (mathtext tick labels, `tight_layout` measuring
    every label) made each plot cost about a second, paid at every validation of a run and in
    every trainer test; these cost about half."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, nothing to close
    from matplotlib.ticker import LogFormatter

    figure = Figure(figsize=(width, 4), dpi=100)
    axes = figure.subplots(1, panels)
    figure.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.13, top=0.92, wspace=0.25)
    for axis in axes:
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(LogFormatter())
        axis.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # labels minor ticks under a decade
        axis.grid(alpha=0.3, which="both")
        axis.set_xlabel("step")
    return figure, axes


def write_loss_curve(log_path: Path, out: Path) -> None:
    """The losses and the per-scale image losses of log.csv against the step (loss_curve.png);
    nothing when no row was logged yet (a run stopped by --stop-after-minutes before --log-every steps)."""
    if not log_path.is_file():
        return
    _, rows = read_log(log_path)
    if not rows:
        return
    figure, (axis, scale_axis) = log_loss_figure(2, 12)
    steps = [int(row["step"]) for row in rows]

    def column(name: str) -> list[float]:
        return [float(row[name]) if row.get(name) else float("nan") for row in rows]

    for name in ("total", "text", "image", "residual"):
        axis.plot(steps, column(name), label=name)
    for name in sorted(key for key in rows[0] if key.startswith("image_scale_")):
        scale_axis.plot(steps, column(name), label=name.replace("image_scale_", "scale "))
    for subplot, title in ((axis, "losses (window means)"), (scale_axis, "image loss per scale")):
        subplot.set_ylabel("loss (nats)")
        subplot.set_title(title)
        subplot.legend()
    figure.savefig(out)
