"""Per-cell leases: whatever number of runs share a grid folder (two shells, the tasks of a job array, the nodes of
a cluster), one run at a time trains a cell; the others go on with other cells.

    lease = Lease(work_folder).acquire()   # <work_folder>/.lease; Held if another live run has it
    ...                                    # a thread refreshes its heartbeat while the cell trains
    lease.check()                          # Lost if another run took it over meanwhile (this run stalled)
    lease.release()

A lease is the file .lease in the cell's working folder (resume.py), created with O_CREAT | O_EXCL (one creator
wins, also on NFS), holding JSON: the owner's host, pid, a random token and its heartbeat (time.time() of the
owner), which a background thread rewrites every `beat` seconds (runs.write_atomic). A lease is stale, and taken
over by the next run that wants the cell, when
- its host is this host and its pid is gone: at once (a killed run);
- or it is a SLURM job's and this run is the same job requeued (--requeue): same SLURM_JOB_ID, a higher
  SLURM_RESTART_COUNT; at once, on whichever node the job restarts;
- or its heartbeat is older than `timeout` (TIMEOUT, 10 minutes, or a run's args.lease_timeout): the pid of
  another machine cannot be checked, but a node that died or was preempted stops beating. The hosts' clocks
  must agree to well within the timeout (NTP does).
A lease that cannot be parsed (being written this instant, or half-written by a run killed then) is judged by
its file's age instead.

Taking over: the stale file is renamed to a name of this process (os.rename: one taker wins), checked to be the
very file judged stale (a fresh lease that another run created meanwhile is put back), and removed; then a new
lease is created with O_EXCL as for a free cell. An owner whose lease was taken over (it stalled for longer than
the timeout) sees another token at its next heartbeat, stops refreshing, and check() raises Lost: it leaves the
cell to the new owner.
"""

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import runs

LEASE = ".lease"
TIMEOUT = 600.0  # seconds without a heartbeat after which another host's lease is stale
BEAT = 30.0  # the longest time between two heartbeats (a quarter of a shorter timeout)
FIELDS = ("host", "pid", "token", "heartbeat")


class Held(Exception):
    """The cell is not this run's to train: another live run holds its lease (`holder`, its lease as a dict, {}
    when unreadable), or (holder None) another run has finished it since this run began."""

    def __init__(self, holder, reason="held by another run"):
        self.holder, self.reason = holder, reason
        super().__init__(reason if holder is None else f"{reason} ({describe(holder)})")

    def __reduce__(self):  # torchrun: rank 0's verdict is broadcast (pickled) to the other ranks
        return type(self), (self.holder, self.reason)


class Lost(Held):
    """Another run took this run's lease over (this run's heartbeat had stopped for longer than the timeout)."""

    def __init__(self, holder, reason="lease taken over by another run after this run's heartbeat stalled; "
                                      "this run leaves the cell to it"):
        super().__init__(holder, reason)


def owner(holder):
    return f"{holder['host']}, pid {holder['pid']}" if holder else "owner unknown"


def describe(holder):
    """'host, pid N, last heartbeat S s ago', or what is known of an unreadable lease."""
    if not holder:
        return "owner unknown: its lease file is being written or is damaged"
    return f"{owner(holder)}, last heartbeat {time.time() - float(holder['heartbeat']):.0f} s ago"


def read(path):
    """(the lease as a dict, or None when it cannot be parsed; its bytes; its modification time)."""
    raw = path.read_bytes()
    mtime = path.stat().st_mtime
    try:
        holder = json.loads(raw)
    except ValueError:
        return None, raw, mtime
    ok = isinstance(holder, dict) and all(k in holder for k in FIELDS)
    return (holder if ok else None), raw, mtime


def slurm_job():
    """(SLURM_JOB_ID, SLURM_RESTART_COUNT) of this process, or None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    return None if job is None else [job, int(os.environ.get("SLURM_RESTART_COUNT") or 0)]


def is_stale(holder, mtime, timeout):
    """True for a lease of a dead process of this host, of an earlier run of this SLURM job (requeued), or one
    whose heartbeat stopped `timeout` seconds ago."""
    if holder is None:
        return time.time() - mtime > timeout
    if holder["host"] == socket.gethostname() and not runs.pid_alive(int(holder["pid"])):
        return True
    job, theirs = slurm_job(), holder.get("slurm")
    if job is not None and isinstance(theirs, list) and theirs[0] == job[0] and int(theirs[1]) < job[1]:
        return True
    return time.time() - float(holder["heartbeat"]) > timeout


class Lease:
    """The lease of one working folder (module docstring). `taken_over`: the stale lease this one replaced."""

    def __init__(self, folder, timeout=TIMEOUT, beat=None):
        self.path = Path(folder) / LEASE
        self.timeout, self.beat = timeout, beat or min(BEAT, timeout / 4)
        self.token = os.urandom(16).hex()
        self.taken_over, self.lost = None, None
        self._stop, self._thread = threading.Event(), None

    def _content(self):
        now = time.time()
        return runs.json_text({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                               "heartbeat": now, "heartbeat_utc": datetime.fromtimestamp(now, timezone.utc)
                               .isoformat(timespec="seconds"), "slurm": slurm_job()})

    def acquire(self, attempts=5):
        """Create the lease (and its folder), taking a stale one over; returns self. Held when another live run
        has it (or when other runs keep winning the race for it)."""
        for _ in range(attempts):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:  # O_EXCL, not runs.write_atomic: exclusive creation is the whole point
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:
                continue  # the folder went away meanwhile (its cell published): make it again
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self._content())
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease {self.path}", daemon=True)
            self._thread.start()
            return self
        raise Held({}, "contended: other runs keep taking it")

    def _take_over_if_stale(self):
        try:
            holder, raw, mtime = read(self.path)
        except FileNotFoundError:
            return  # released meanwhile: free again
        if not is_stale(holder, mtime, self.timeout):
            raise Held(holder or {})
        grave = self.path.with_name(f"{LEASE}.stale{runs.temp_suffix()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return  # another run took it over first
        try:
            if grave.read_bytes() == raw:
                self.taken_over = holder or {}
            else:  # a fresh lease created after this run read the stale one: give it back
                try:
                    os.link(grave, self.path)
                except FileExistsError:
                    pass
        finally:
            grave.unlink(missing_ok=True)

    def _heartbeat(self):
        while not self._stop.wait(self.beat):
            try:
                holder = read(self.path)[0]
            except OSError:
                holder = None
            if holder is None or holder["token"] != self.token:
                self.lost = holder or {}
                return
            try:
                runs.write_text_atomic(self.path, self._content())
            except OSError:  # a full disk, a network file system away: the next beat tries again
                pass

    def check(self):
        """Raise Lost when another run has taken this lease over."""
        if self.lost is not None:
            raise Lost(self.lost)

    def stop(self):
        """Stop the heartbeat (before the folder holding the lease is renamed or removed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self):
        """Stop the heartbeat and remove the lease, if it is still this run's."""
        self.stop()
        try:
            holder = read(self.path)[0]
        except FileNotFoundError:
            return
        if holder is not None and holder["token"] == self.token:
            self.path.unlink(missing_ok=True)


def report_held(held):
    """The closing line of a run that skipped cells other live runs hold (Held exceptions; None: none held)."""
    held = [e for e in held if e.holder is not None]
    if held:
        owners = "; ".join(sorted({owner(e.holder) for e in held}))
        print(f"{len(held)} cell{'s' if len(held) > 1 else ''} held by another run ({owners}): rerun later to "
              "pick up their results", flush=True)
