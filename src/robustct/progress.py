"""Progress for long loops that neither floods CI logs nor stays silent for minutes.

- On a terminal: a ``tqdm`` bar on stderr.
- Otherwise (CI, ``dvc repro`` output captured in a log): one line on stderr at most every ``every_s`` seconds
  (``ROBUSTCT_PROGRESS_EVERY``, default 30) plus a final line, each with count, percentage, elapsed time and
  the time left estimated from the mean rate so far.
- ``ROBUSTCT_PROGRESS`` = ``bar`` | ``lines`` | ``off`` overrides the choice.

The stages call :func:`progress` around per-item loops and :func:`timed` for per-step messages (attack
sweeps: one message per attack and epsilon, prefixed with the elapsed time).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")
DEFAULT_EVERY_S = 30.0


def mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off`` (``ROBUSTCT_PROGRESS``, else ``bar`` on a terminal, else ``lines``)."""
    forced = os.environ.get("ROBUSTCT_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def format_seconds(s: float) -> str:
    """``'45s'``, ``'3m05s'``, ``'1h02m'``."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class LineProgress:
    """Throttled progress lines: ``desc: 30/120 (25%), 12s elapsed, about 36s left[, extra]``.

    Args:
        total: number of items (``None``: no percentage or estimate).
        every_s: at most one line per ``every_s`` seconds (the final line always prints).
        clock: seconds counter (``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, desc: str, total: int | None = None, every_s: float | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.stream, self.clock = desc, total, stream or sys.stderr, clock
        self.every_s = float(os.environ.get("ROBUSTCT_PROGRESS_EVERY", DEFAULT_EVERY_S)) if every_s is None else every_s
        self.start = self.last = clock()
        self.n = 0

    def line(self, extra: str = "") -> str:
        elapsed = self.clock() - self.start
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += f", {format_seconds(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            text += f", about {format_seconds(elapsed / self.n * (self.total - self.n))} left"
        return text + (f", {extra}" if extra else "")

    def update(self, n: int = 1, extra: str = "") -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every_s or (self.total is not None and self.n >= self.total):
            self.last = now
            print(self.line(extra), file=self.stream, flush=True)

    def close(self) -> None:
        if self.total is None or self.n < self.total:  # the loop ended early or had no known length
            print(self.line("done"), file=self.stream, flush=True)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, every_s: float | None = None,
             stream: TextIO | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while showing progress (see the module docstring)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    how = mode(stream)
    if how == "off":
        yield from iterable
        return
    if how == "bar":
        from tqdm.auto import tqdm  # noqa: PLC0415

        yield from tqdm(iterable, desc=desc, total=total, file=stream or sys.stderr, mininterval=1.0)
        return
    lines = LineProgress(desc, total, every_s, stream)
    for item in iterable:
        yield item
        lines.update()
    lines.close()


def timed(say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> Callable[[str], None]:
    """Wrap a message printer so each message starts with the elapsed time, e.g. ``[2m13s] pgd eps=...``."""
    start = clock()

    def emit(message: str) -> None:
        say(f"[{format_seconds(clock() - start)}] {message}")

    return emit


@contextmanager
def section_timer(timings: dict | None, key: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Add the seconds the ``with`` block took (``clock``; tests pass a fake one) to ``timings[key]``, also when it
    raises; nothing, and no clock read, when ``timings`` is None. For budgets and MLflow only, never for a DVC
    output (the seconds differ from run to run)."""
    if timings is None:
        yield
        return
    start = clock()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + clock() - start
