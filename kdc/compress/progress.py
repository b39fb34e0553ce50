"""Progress of a training epoch: a live bar on a terminal, plain lines at an interval everywhere else (nohup, a pipe,
CI), so that a long ``kdc distill`` is never silent. Only the main process of a process group reports."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdc.compress import distributed

#: Seconds between plain progress lines when stderr is not a terminal (``KDC_PROGRESS_SECONDS`` overrides it).
PLAIN_INTERVAL = 30.0
#: ``report(step, mean_loss)`` after each optimisation step.
Report = Callable[[int, float], None]


@contextlib.contextmanager
def epoch_progress(description: str, total: int) -> Iterator[Report]:
    """Yield the per-step reporter of one epoch of ``total`` steps."""
    if not distributed.is_main():
        yield lambda step, loss: None
    elif sys.stderr.isatty():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4g}"), TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(description, total=total, loss=0.0)
            yield lambda step, loss: bar.update(task, completed=step, loss=loss)
    else:
        yield plain_reporter(description, total, float(os.environ.get("KDC_PROGRESS_SECONDS", PLAIN_INTERVAL)))


def plain_reporter(description: str, total: int, interval: float) -> Report:
    """Print ``description step k/total, loss, steps/s`` on the first step, then every ``interval`` seconds."""
    started = time.perf_counter()
    last: list[float] = []

    def report(step: int, loss: float) -> None:
        now = time.perf_counter()
        if last and now - last[0] < interval:
            return
        last[:] = [now]
        rate = step / (now - started) if now > started else 0.0
        print(f"{description}: step {step}/{total}, loss {loss:.4g}, {rate:.2f} steps/s", file=sys.stderr, flush=True)

    return report
