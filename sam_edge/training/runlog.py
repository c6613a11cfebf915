"""Shared by the trainers: CSV run logs (mirrored to TensorBoard when a writer is given), the
truncation that keeps them consistent with a resumed checkpoint, and SIGTERM handled like Ctrl-C."""
from __future__ import annotations

import csv
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from sam_edge.utils.io import atomic_path


def append_csv(path: Path, row: dict[str, Any], tb: Any = None, tb_prefix: str = "") -> None:
    """Append ``row`` to the CSV at ``path`` (header written with the first row); numeric fields
    other than ``step`` also go to the TensorBoard writer ``tb`` as ``{tb_prefix}{stem}/{key}``."""
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    if tb is not None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "step":
                tb.add_scalar(f"{tb_prefix}{path.stem}/{k}", v, row["step"])


def truncate_csv(path: Path, step: int) -> None:
    """Drop the rows of ``path`` logged after ``step`` (atomically; the file goes when none is
    left), so a run resumed from a checkpoint at ``step`` does not log those steps twice."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # a row cut short by a kill mid-append (fields missing) is dropped with the rows past ``step``
    keep = [r for r in rows if None not in r and None not in r.values() and r["step"].isdigit()
            and int(r["step"]) <= step]
    if not keep:
        path.unlink()
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)


def interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (a scheduler's pre-emption, ``kill``, ``timeout``) raise KeyboardInterrupt in
    the main thread, so the trainers' interrupt path writes a checkpoint before exiting, as on
    Ctrl-C. Returns the function that restores the previous handler (a no-op off the main
    thread, where handlers cannot be installed)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
