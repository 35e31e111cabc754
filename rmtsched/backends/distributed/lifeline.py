"""A rank ends when the process that launched it ends, however that one ended (SIGKILL included).

Linux's ``PR_SET_PDEATHSIG`` fires on the death of the *parent*, but the ranks of rmtsched's launcher are
children of the multiprocessing forkserver, which itself lives on as long as any rank holds its pipe; so
a killed launcher used to leave its ranks computing until their process group timed out. Instead each rank
watches the launcher's pid: a daemon thread blocks on a pidfd (Linux >= 5.3; polls the pid elsewhere) and
ends the process as soon as the launcher is gone. torchrun's workers watch their agent the same way.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time

EXIT_ORPHANED = 3  # a runtime failure: the run this rank belonged to is gone
_POLL_S = 0.5


def exit_with(pid: int, *, name: str = "rank") -> threading.Thread:
    """Start a daemon thread that ends this process with ``EXIT_ORPHANED`` once process ``pid`` has exited.

    The pidfd is opened here, before returning, so a launcher that dies at once is still seen (and a pid
    reused later cannot be mistaken for it); no pidfd (not Linux, an old kernel) falls back to polling.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        _orphaned(pid, name)
    except (AttributeError, OSError):
        pidfd = None
    watcher = threading.Thread(target=_watch, args=(pid, pidfd, name), name=f"rmtsched-lifeline-{pid}", daemon=True)
    watcher.start()
    return watcher


def _watch(pid: int, pidfd: int | None, name: str) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the process has exited
    else:
        while _alive(pid):
            time.sleep(_POLL_S)
    _orphaned(pid, name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        pass
    return True


def _orphaned(pid: int, name: str) -> None:
    # os._exit ends every thread at once: the main thread may be blocked in a collective that would
    # otherwise only give up after the process group's timeout.
    print(f"rmtsched {name} {os.getpid()}: its launcher (pid {pid}) has exited; ending", file=sys.stderr, flush=True)
    os._exit(EXIT_ORPHANED)
