"""No orphans: ranks end when their launcher ends, however it ends.

SIGTERM or SIGHUP to the launcher ends every rank and fails the run with one line (a ``RunFailure``);
SIGKILL (what ``timeout -s KILL``, a CI cancel or the OOM killer do) gives the launcher no chance to clean up,
so each rank watches the launcher's pid itself and must be gone within 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
ORPHAN_LIMIT_S = 10.0


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, read from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    table = process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def living(pids: set[int]) -> set[int]:
    """The pids still running (a zombie has ended; it only waits for its parent to reap it)."""
    table = process_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def wait_for_ranks(launcher: subprocess.Popen, num_ranks: int, tmp_path: Path, limit_s: float = 60.0) -> set[int]:
    """The launcher's grandchildren (ranks are children of its forkserver), once ``num_ranks`` are running."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert launcher.poll() is None, (tmp_path / "err").read_text()[-3000:]
        children = {pid for pid, (parent, _) in process_table().items() if parent == launcher.pid}
        ranks = descendants(launcher.pid) - children
        if len(ranks) >= num_ranks:
            time.sleep(1.0)  # let them get into their steps
            return descendants(launcher.pid) - children
        time.sleep(0.2)
    raise AssertionError(f"{num_ranks} ranks did not start within {limit_s} s")


def wait_until_gone(pids: set[int], limit_s: float) -> set[int]:
    deadline = time.monotonic() + limit_s
    while living(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return living(pids)


def end_leftovers(pids: set[int]) -> None:
    """Clean up after a failed test: only the processes this test started, by pid."""
    for pid in living(pids):
        os.kill(pid, signal.SIGKILL)


def start(command: list[str], tmp_path: Path) -> subprocess.Popen:
    """Output to files, not pipes: ranks inherit the launcher's stdout and stderr, so reading a pipe to its end
    would wait for the very ranks this test is about."""
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, text=True)


def test_killing_the_cli_launcher_leaves_no_rank_alive(tmp_path):
    command = [
        sys.executable, "-m", "rmtsched", "run", "--model", "armt-tiny", "--segment-len", "8", "--mem-tokens", "2",
        "--seq-len", "400000", "--schedule", "pipelined", "--devices", "2", "--threads-per-process", "1",
        "--no-warmup", "--timeout", "120",
    ]  # fmt: skip  # 50000 segments: minutes of work, far longer than this test
    launcher = start(command, tmp_path)
    ranks: set[int] = set()
    try:
        ranks = wait_for_ranks(launcher, 2, tmp_path)
        everything = descendants(launcher.pid)
        launcher.kill()
        launcher.wait()
        killed_at = time.monotonic()
        survivors = wait_until_gone(ranks, ORPHAN_LIMIT_S)
        assert survivors == set(), f"ranks {survivors} outlived the killed launcher by {ORPHAN_LIMIT_S} s"
        # The forkserver and resource tracker go too: they end once no rank holds their pipes.
        assert wait_until_gone(everything, ORPHAN_LIMIT_S - (time.monotonic() - killed_at) + 2) == set()
    finally:
        launcher.kill()
        launcher.wait()
        end_leftovers(ranks)


HANGING_RUN = textwrap.dedent(
    """
    import functools, sys
    sys.path.insert(0, {here!r})
    import torch
    from dist_toy_model import build_toy
    from rmtsched.backends.distributed import DistributedError, run_pipelined
    factory = functools.partial(
        build_toy, num_layers=4, d_model=8, segment_len=4, mem_tokens=1, vocab_size=17, global_memory=False,
        seed=0, dtype=torch.float32, fault=("hang", 3, 0),
    )
    try:
        run_pipelined(factory, torch.zeros(1, 16, dtype=torch.long), num_procs=2, timeout_s=120, warmup=False)
    except DistributedError as exc:
        print(f"{{exc.kind}}: {{exc}}", file=sys.stderr)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_launcher_ends_every_rank_and_fails_in_one_line(signum, tmp_path):
    launcher = start([sys.executable, "-c", HANGING_RUN.format(here=str(HERE))], tmp_path)
    ranks: set[int] = set()
    try:
        ranks = wait_for_ranks(launcher, 2, tmp_path)
        launcher.send_signal(signum)
        launcher.wait(timeout=20)
        err = (tmp_path / "err").read_text()
        assert launcher.returncode == 3, err[-3000:]
        assert err.strip().splitlines() == [
            f"ended: the launcher received {signal.Signals(signum).name}: every rank was ended"
        ]
        assert wait_until_gone(ranks, 2.0) == set()  # ended by the launcher itself, not by their lifeline
    finally:
        launcher.kill()
        launcher.wait()
        end_leftovers(ranks)


def test_the_lifeline_ends_a_process_when_the_watched_one_exits():
    watched = subprocess.Popen(["sleep", "60"])
    script = (
        "import sys, time\n"
        "from rmtsched.backends.distributed.lifeline import exit_with\n"
        f"exit_with({watched.pid}, name='test')\n"
        "print('watching', flush=True)\n"
        "time.sleep(60)\n"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout.readline().strip() == "watching"
        watched.kill()
        watched.wait()
        _, err = watcher.communicate(timeout=5)
        assert watcher.returncode == 3
        assert f"its launcher (pid {watched.pid}) has exited; ending" in err
    finally:
        for process in (watched, watcher):
            if process.poll() is None:
                process.kill()
                process.wait()


FAKE_AGENT = textwrap.dedent(
    """
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-m", "rmtsched.cli.torchrun_worker", *sys.argv[1:]])
    print(worker.pid, flush=True)
    time.sleep(120)
    """
)


def test_a_torchrun_worker_ends_when_its_agent_is_killed(tmp_path):
    """torchrun's agent starts each worker in a session of its own and, SIGKILLed, leaves it running (measured:
    workers computed on); the worker watches its parent. A stand-in agent starts rank 0 of two, which waits
    for a peer that never comes, with its store listening (so it is past its start-up) until the agent dies."""
    spec = tmp_path / "toy.json"
    spec.write_text(
        '{"name": "toy", "family": "rmt", "num_layers": 2, "d_model": 16, "num_heads": 2, "num_kv_heads": 1, '
        '"mlp_dim": 32, "vocab_size": 37, "segment_len": 5, "mem_tokens": 2, "mem_key_dim": 4}'
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = dict(os.environ, RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    options = ["--model", str(spec), "--seq-len", "10", "--timeout", "120"]
    with open(tmp_path / "err", "w") as err:
        agent = subprocess.Popen(
            [sys.executable, "-c", FAKE_AGENT, *options], stdout=subprocess.PIPE, stderr=err, env=environment, text=True
        )
    worker = int(agent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert time.monotonic() < deadline and living({worker}), (tmp_path / "err").read_text()[-3000:]
            time.sleep(0.2)
        agent.kill()
        agent.wait()
        assert wait_until_gone({worker}, ORPHAN_LIMIT_S) == set(), "the worker outlived its killed agent"
        assert "its launcher" in (tmp_path / "err").read_text()
    finally:
        agent.kill()
        agent.wait()
        end_leftovers({worker})


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
