"""The signals an array task stops on: SIGTERM (scancel, node shutdown), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's warning
before the time limit, `--signal=B:USR1@N`). Each sets one event the workers check between files and parts."""

from __future__ import annotations

import signal
import threading
from types import TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopOnSignals:
    """`with StopOnSignals() as signals:` … `signals.stop` is set by the first signal, `signals.first` names it,
    `signals.caught` lists every one so far; the previous handlers come back on exit. `signals` chooses which (the
    local executor's parent also stops on SIGHUP and leaves SIGUSR1 alone)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.stop = threading.Event()
        self.caught: list[str] = []
        self._previous: dict[int, object] = {}

    @property
    def first(self) -> str | None:
        return self.caught[0] if self.caught else None

    def _handler(self, signum: int, _frame: object) -> None:
        self.caught.append(signal.Signals(signum).name)
        self.stop.set()

    def __enter__(self) -> "StopOnSignals":
        self._previous = {sig: signal.signal(sig, self._handler) for sig in self.signals}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
