"""A benchmark run's time budget, checked inside long arms (compiling,
capturing, training loops) as well as before them."""
import time
from typing import Callable, Optional


class OverBudget(RuntimeError):
    """The run's time budget ran out; the message says where."""


class Budget:
    """The seconds a run may take, counted from ``start``.

    Args:
        seconds (float, optional): The budget; None: no limit.
        clock (Callable): Seconds clock (wall clock by default).
        start (float, optional): The clock's value the budget counts from
            (default: now).
    """

    def __init__(self,
                 seconds: Optional[float],
                 clock: Callable[[], float] = time.perf_counter,
                 start: Optional[float] = None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError(f'time budget {seconds} s: must be >= 0')
        self.seconds = seconds
        self.clock = clock
        self.start = clock() if start is None else start

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left (infinite without a limit)."""
        if self.seconds is None:
            return float('inf')
        return self.seconds - self.elapsed()

    def over(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds

    def check(self, where: str) -> None:
        """Raise :class:`OverBudget` naming ``where`` once the budget is
        spent."""
        if self.over():
            raise OverBudget(f'cut by the time budget ({self.seconds:g} s) '
                             f'{where}, {self.elapsed():.0f} s into the run')
