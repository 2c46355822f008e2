"""Process-group helpers for the test harnesses that run real servers
(dovecot.py, postfix.py): each server runs in its own session, so its
master and children form one process group that can be waited for and
killed as a whole; every instance started is stopped at exit whatever
happens (atexit)."""

import atexit
import os
import shutil
import signal
import sys
import time

_live = set()  # started instances (with a stop() method)


def _stop_all():
    for inst in list(_live):
        try:
            inst.stop()
        except Exception:  # exiting anyway: best effort
            pass


atexit.register(_stop_all)


def track(inst):
    """Stop inst at exit unless untrack()ed first (by its stop())."""
    _live.add(inst)


def untrack(inst):
    _live.discard(inst)


def group_members(pgid):
    """Pids of live (not zombie) processes in process group pgid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def wait_group_gone(pgid, timeout):
    """Waits (bounded) until no process of pgid runs; True if none does."""
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_members(pgid)


def kill_group(pgid, timeout):
    """SIGKILL process group pgid and wait (bounded) until none of it runs."""
    if pgid is None or not group_members(pgid):
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_group_gone(pgid, timeout)


def read_text(*paths):
    """The files' contents, concatenated as text; missing ones are empty."""
    text = ""
    for p in paths:
        try:
            with open(p, "rb") as f:
                text += f.read().decode("utf-8", "replace")
        except OSError:
            pass
    return text


class Server:
    """What the server harnesses share: cleanup() stops the server and
    removes its temp dir; as a context manager it starts the server (and
    cleans up if that fails), and on an exception shows the log tail.
    Subclasses provide start(), stop(), log_tail() and self.tmp."""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write(self.log_tail())
        self.cleanup()
        return False
