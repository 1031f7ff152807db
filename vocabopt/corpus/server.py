"""The last module the fork server imports when `pool` starts it: SIGINT back to what Python's own server has.

Job: `pool._context` starts the fork server with SIGINT blocked, because the server imports its preload (numpy,
tokenizers, vocabopt: ~0.35 s) before it ignores SIGINT, and a Ctrl-C then would kill it printing a traceback.
Imported last, this module drops a SIGINT that came meanwhile and unblocks it, so the processes the server forks
(for this package and for anyone else in the process) start with the mask and handler they would have anyway.
Inputs: none. Outputs: none; a no-op wherever SIGINT is not blocked in the main thread (any other importer).
"""

from __future__ import annotations

import signal
import threading

if (
    hasattr(signal, "pthread_sigmask")
    and threading.current_thread() is threading.main_thread()
    and signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
):
    _handler = signal.getsignal(signal.SIGINT) or signal.default_int_handler  # None: set outside Python
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C that came during the imports is dropped here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, _handler)  # the server records it, and its children get it back
