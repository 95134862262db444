"""The thread rule (fireact.threads): an explicit `threads=` wins; otherwise a process's share of
the cores among the fireact processes registered and alive, a registration whose process is
gone (or whose pid now belongs to another process) not counted. Real processes, a real register."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from fireact import threads

REGISTERED = "from fireact import threads; held = threads.computing(); held.__enter__(); print('registered', flush=True); import time; time.sleep(120)"


@pytest.fixture(autouse=True)
def own_register(tmp_path, monkeypatch):
    """A register of this test's own, and this process's torch threads as they were after it."""
    monkeypatch.setenv("FIREACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(threads, "_this", threads._Share())
    before = torch.get_num_threads()
    yield
    threads._this.unregister()
    torch.set_num_threads(before)


def start_registered() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", REGISTERED], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert process.stdout.readline().strip() == "registered"
    return process


def test_an_explicit_setting_wins_and_a_bad_one_names_the_key():
    assert threads.share(3) == 3 and torch.get_num_threads() == 3
    assert threads.running() == 0  # an explicit setting does not register
    with pytest.raises(ValueError, match=r"threads=0: give a whole number of at least 1"):
        threads.share(0)


def test_a_stage_computes_registered_with_every_core_alone_and_leaves_no_trace():
    torch.set_num_threads(1)
    with threads.computing() as count:
        assert count == threads.cores() == torch.get_num_threads() and threads.running() == 1
    assert threads.running() == 0 and torch.get_num_threads() == 1  # unregistered, as it was before


def test_two_registered_processes_share_the_cores_and_a_killed_one_gives_them_back():
    other = start_registered()
    try:
        assert threads.share() == max(1, threads.cores() // 2) == torch.get_num_threads()
        assert threads.running() == 2
    finally:
        other.send_signal(signal.SIGKILL)  # no exit hook runs: its registration stays behind, stale
        other.wait()
    assert (threads.register_dir() / f"{other.pid}.pid").exists()
    assert threads.share() == threads.cores()
    assert not (threads.register_dir() / f"{other.pid}.pid").exists()  # removed as stale


def test_a_process_that_exits_unregisters_itself():
    process = subprocess.run([sys.executable, "-c", "from fireact import threads; held = threads.computing(); held.__enter__()"], env=os.environ)
    assert process.returncode == 0
    assert list(threads.register_dir().glob("*.pid")) == []


def test_a_pid_taken_by_another_process_is_not_counted():
    threads.register_dir().mkdir(parents=True)
    (threads.register_dir() / f"{os.getppid()}.pid").write_text("1")  # alive, but not started at tick 1
    assert threads.running() == 0


def test_refresh_follows_the_register():
    threads.share()
    other = start_registered()
    try:
        threads._this.checked -= threads.REFRESH_SECONDS  # as if the last read was that long ago
        threads.refresh()
        assert torch.get_num_threads() == max(1, threads.cores() // 2)
    finally:
        other.terminate()
        other.wait()


def test_a_stage_says_what_it_computes_with(caplog):
    with caplog.at_level("INFO", logger="fireact.threads"), threads.computing():
        pass
    assert f"computing with {threads.cores()} of {threads.cores()} cores: 1 fireact process(es) running" in caplog.text
