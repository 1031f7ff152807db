"""vocabopt.corpus.server: the fork server `pool` starts survives a Ctrl-C during its imports, and then hands its
children SIGINT as Python's own server would."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest

SCRIPT = """
import os, signal, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver
from vocabopt.corpus import pool

def sigint_state():
    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.getsignal(signal.SIGINT).__name__

if __name__ == "__main__":
    ctx = pool._context()  # returns while the server is still importing its preload (~0.35 s)
    server = forkserver._forkserver._forkserver_pid
    for _ in range(30):  # a Ctrl-C at the server, again and again, through its imports
        os.kill(server, signal.SIGINT)
        time.sleep(0.02)
    print(os.waitpid(server, os.WNOHANG) == (0, 0))  # still running (a pool would start another one silently)
    with ProcessPoolExecutor(1, mp_context=ctx) as workers:
        print(*workers.submit(sigint_state).result())
"""


@pytest.mark.skipif(
    sys.platform == "darwin" or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="workers are spawned here (Windows, macOS)",
)
def test_the_fork_server_survives_sigint_while_it_imports(tmp_path):
    script = tmp_path / "starts_a_server.py"
    script.write_text(SCRIPT, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    # alive, and its children get SIGINT unblocked with Python's handler: what any other user of the server expects
    assert r.stdout.split() == ["True", "False", "default_int_handler"]
