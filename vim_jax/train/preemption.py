"""Stopping cleanly on SIGTERM (preemption, `kill`, a cluster's time limit).

The handler only records the request; the training loop checks it between steps, saves a
checkpoint and returns, so a rerun of the same command resumes exactly there. On several hosts
the hosts must agree on the step to stop at: JAX's coordination service (started by
``jax.distributed.initialize``) catches the signal and orbax's ``reached_preemption`` returns the
same answer on every host.
"""

from __future__ import annotations

import signal
import threading

import jax


class StopRequest:
    """Records SIGTERM while active (a context manager restoring the previous handler on exit)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = None

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be installed from the main thread; elsewhere (a notebook's
        # worker thread, say) the loop still stops at `stop_after_steps` and on preemption.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def requested(self, step: int, checkpoint_manager) -> bool:
        """Whether to save and stop after ``step``."""
        if jax.process_count() > 1:
            return bool(checkpoint_manager.reached_preemption(step))
        return self.signal_name is not None
