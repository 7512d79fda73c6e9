"""Training logs: the CSV log, TensorBoard scalars and ``progress.png``.

The history (one row per epoch) lives in the checkpoint, and the CSV and the
picture are rewritten from it after each epoch, so a resumed run has one clean
log rather than duplicated rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lesionseg.data.atomic import atomic_path, write_text_atomic

COLUMNS = (
    "epoch", "stage", "network", "stage_epoch", "loss", "lr", "val_dice", "val_loss",
    "seconds", "segments_per_s", "precision",
)  # fmt: skip


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write the history as CSV (atomically)."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    write_text_atomic(path, stream.getvalue())


def plot_progress(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Loss, validation Dice and learning rate against the epoch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(epochs, [r["loss"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("training loss")
    val = [
        (r["epoch"], r["val_dice"])
        for r in rows
        if r.get("val_dice") is not None and not math.isnan(r["val_dice"])
    ]
    if val:
        axes[1].plot(*zip(*val), marker="o", color="tab:green")
    held = [(r["epoch"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if held and not val:  # the held-out loss of a patch classifier, on the same panel
        axes[1].plot(*zip(*held), marker="o", color="tab:red")
        axes[1].set_ylabel("held-out loss")
    else:
        axes[1].set_ylabel("validation Dice")
        axes[1].set_ylim(0, 1)
    axes[2].plot(epochs, [r["lr"] for r in rows], color="tab:orange")
    axes[2].set_ylabel("learning rate")
    if all(r["lr"] > 0 for r in rows):
        axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    stages = [r["epoch"] for i, r in enumerate(rows) if i and r["stage"] != rows[i - 1]["stage"]]
    for ax in axes:
        ax.grid(alpha=0.3)
        for x in stages:
            ax.axvline(x - 0.5, color="grey", linestyle="--", linewidth=0.8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


class TensorBoardLog:
    """TensorBoard scalars when ``tensorboard`` is importable; nothing otherwise.

    Args:
        folder: Log folder.
        purge_step: On resume, the first epoch to (re)write; later events are dropped.
    """

    def __init__(self, folder: Path, purge_step: int | None = None):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional dependency
            return
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def log(self, row: dict[str, Any]) -> None:
        """Write one epoch's numbers."""
        if self.writer is None:
            return
        for key in ("loss", "lr", "val_dice", "val_loss", "segments_per_s"):
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(f"train/{key}", value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()
