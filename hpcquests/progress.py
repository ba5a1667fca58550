"""Progress lines for long steps: stderr, rate-limited, rank 0 only, silent when disabled."""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress("descriptors", total, unit="structures")``; call ``update(done)``; ``close()``.

    Prints at most every ``interval`` seconds, to stderr (stdout stays clean for ``--json``);
    steps shorter than ``interval`` print nothing, longer ones end with a 100% line.
    """

    def __init__(self, label: str, total: int, unit: str = "", *, enabled: bool = True,
                 interval: float = 1.0, stream=None):
        self.label = label
        self.total = int(total)
        self.unit = unit
        self.enabled = enabled
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._last = self.start  # first line only once the step has run for `interval` seconds
        self._printed = False
        self.done = 0

    def update(self, done: int):
        self.done = int(done)
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        if now - self._last >= self.interval or (finished and self._printed):
            self._last = now
            self._printed = True
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            pct = 100.0 * self.done / self.total if self.total else 100.0
            print(f"[hpcquests] {self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%, "
                  f"{rate:,.0f} {self.unit}/s, {elapsed:.1f} s)", file=self.stream, flush=True)

    def __call__(self, done: int, total: int | None = None):
        if total is not None:
            self.total = int(total)
        self.update(done)

    def close(self):
        if self.enabled and self.done < self.total:
            self.update(self.total)
