"""SIGTERM (a TPU preemption notice) during a run.

Before the first step of this invocation completes (model loading, data set-up, compiling),
there is nothing new to save: a SIGTERM exits at once with EXIT_PREEMPTED. A watcher thread does
it, woken through Python's signal wakeup fd, so it is not held up by a long compile in the main
thread (XLA releases the GIL while compiling). Once a step has completed, SIGTERM only sets a flag:
the loop finishes the current step, saves, and ends with `preempted`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from opdlm_jax.errors import EXIT_PREEMPTED

log = logging.getLogger(__name__)


class PreemptionGuard:
    def __init__(self):
        self.requested = False
        self._started = False
        self._installed = False
        self._previous_handler = None
        self._previous_wakeup = -1
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach only the main thread: no guard (e.g. a library caller's worker)
        self._previous_handler = signal.signal(signal.SIGTERM, self._handle)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, args=(read_end,), daemon=True, name="sigterm-watch")
        self._watcher.start()
        self._installed = True
        return self

    def step_completed(self) -> None:
        """From now on a SIGTERM waits for the end of the current step (there is work to save)."""
        self._started = True

    def _exit_now(self) -> None:
        os.write(2, b"preempted (SIGTERM) before the first step completed: nothing to save; "
                    b"exiting with code %d\n" % EXIT_PREEMPTED)
        os._exit(EXIT_PREEMPTED)

    def _watch(self, read_end: int) -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data and not self._started:
                self._exit_now()

    def _handle(self, signum, frame) -> None:
        if not self._started:
            self._exit_now()
        log.warning("SIGTERM received: saving after the current step, then exiting")
        print("SIGTERM received: saving after the current step, then exiting", file=sys.stderr, flush=True)
        self.requested = True

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        signal.set_wakeup_fd(self._previous_wakeup)
        signal.signal(signal.SIGTERM, self._previous_handler)
        read_end, write_end = self._pipe
        os.close(write_end)  # the watcher reads end-of-file and returns
        self._watcher.join(timeout=5)
        os.close(read_end)
