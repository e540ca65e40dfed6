"""The profiler's clocks: marks on one timeline, the node hook that marks every node, and quiet timing conditions.

On the GPU a mark is a CUDA event (device time; read after a synchronize at the end of
each step); on the CPU it is time.perf_counter (CPU ops are synchronous).
"""

from __future__ import annotations

import contextlib
import gc
import time

import torch


class Clock:
    """Marks on one timeline: CUDA events on a GPU (device time), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._pool: list = []
        self._used = 0
        if self.cuda:
            torch.cuda.synchronize(device)
            self.origin = torch.cuda.Event(enable_timing=True)
            self.origin.record()
        else:
            self.origin = time.perf_counter()

    def mark(self):
        """A point in time (an event recorded on the current stream, or a perf_counter value)."""
        if not self.cuda:
            return time.perf_counter()
        if self._used == len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        e = self._pool[self._used]
        self._used += 1
        e.record()
        return e

    def sync(self) -> None:
        """Wait for the device; call before reading marks."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def recycle(self) -> None:
        """Marks read so far may be reused (after sync and reading them)."""
        self._used = 0

    def ms(self, mark) -> float:
        """Milliseconds from the origin to a mark (after sync)."""
        return self.origin.elapsed_time(mark) if self.cuda else (mark - self.origin) * 1e3


class NodeTimer:
    """The executor's node hook: a start and an end mark around every node."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.marks: list[tuple[str, object, object]] = []

    def __call__(self, name: str, thunk):
        mark = self.clock.mark
        start = mark()
        out = thunk()
        self.marks.append((name, start, mark()))
        return out

    def read(self) -> list[tuple[str, float, float]]:
        """(name, start_ms, end_ms) of the nodes timed since the last read (call after clock.sync)."""
        ms = self.clock.ms
        out = [(name, ms(s), ms(e)) for name, s, e in self.marks]
        self.marks = []
        return out


@contextlib.contextmanager
def quiet_timing(threads: int | None):
    """Fixed torch CPU threads (if given) and no garbage collection inside timed steps; yields the thread count."""
    threads_before = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    if threads:
        torch.set_num_threads(threads)
    gc.collect()
    gc.disable()  # a collection inside a timed step is noise, not the engine
    try:
        yield torch.get_num_threads()
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(threads_before)
