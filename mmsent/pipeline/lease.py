"""A lease on OUTPUT, so that two jobs never write to one OUTPUT at once.

    with lease.hold("out/scores"):     # LeaseError when another live job holds it
        ...                            # the job; LeaseError at the end if the lease was lost

OUTPUT/_lease.json is created exclusively (local: O_CREAT | O_EXCL; S3: a conditional PUT,
If-None-Match: *) and holds the job id, host, pid, start time and a heartbeat, rewritten every
HEARTBEAT_S by a daemon thread (S3: a PUT conditional on the lease's ETag, so a lease taken over
is never overwritten). Its holder is gone, and the lease is taken over, when the lease was not
rewritten for TTL_S, or at once when the holder ran on this host (same hostname and boot id) and
its pid is no longer that process (exited, a zombie, or reused). A job SIGKILLed and re-run on
its host therefore starts at once; one whose node was lost, TTL_S after its last heartbeat.
The lease is deleted at the end, also on failure.

A job whose heartbeats fail for longer than it may count on (TTL_S minus two beats) stops: its
main thread gets a KeyboardInterrupt, turned into a LeaseError. S3 needs conditional writes
(If-None-Match / If-Match on PUT and DELETE: AWS, recent MinIO, moto); a store that ignores them
gives no protection. Locally, a takeover is a rename (atomic), but a heartbeat compares, then
renames: a takeover that lands between the two (microseconds, and only of a lease past its TTL)
is seen at the next heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

from ..io.dumps import filesystem

LEASE = "_lease.json"
HEARTBEAT_S = 10.0
TTL_S = 120.0
GRACE_S = 10.0  # a lease file that does not parse yet is being written (O_EXCL, then write)


class LeaseError(RuntimeError):
    pass


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _proc(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a Linux process from /proc (None: no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold ") "
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _running(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    proc = _proc(pid)
    if proc is None:
        return True  # no /proc: os.kill said it exists
    state, started = proc
    return state not in ("Z", "X") and (start is None or started == start)  # zombie, pid reused


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def holder_info(job_id: str) -> dict:
    pid = os.getpid()
    proc = _proc(pid)
    return {
        "job_id": job_id,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": pid,
        "pid_start": proc[1] if proc else None,
        "started": _now(),
        "heartbeat": _now(),
    }


def gone(holder: dict | None, age_s: float, ttl_s: float = TTL_S) -> str | None:
    """Why the holder of a lease last written `age_s` ago is gone (None: it may be alive)."""
    if holder is None:
        return "unreadable lease" if age_s > GRACE_S else None
    if age_s > ttl_s:
        return f"no heartbeat for {age_s:.0f} s"
    here = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
    pid = holder.get("pid")
    if here and isinstance(pid, int) and not _running(pid, holder.get("pid_start")):
        return f"its process {pid} is not running on this host"
    return None


class _LocalStore:
    """The lease as a local file. Token: the bytes last read or written."""

    def __init__(self, path: str):
        self.path = path

    def create(self, data: bytes) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data

    def read(self) -> tuple[bytes, bytes, float] | None:
        """(data, token, seconds since written) or None when there is no lease."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 16)
                age = time.time() - os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return data, data, age

    def take(self, token: bytes, data: bytes) -> bytes | None:
        """Replace the lease read as `token` (a dead holder's) by ours: the rename claims whatever
        lease is there; if that is not the one judged dead, it is put back."""
        claimed = f"{self.path}.{uuid.uuid4().hex}"
        try:
            os.rename(self.path, claimed)
        except FileNotFoundError:
            return None
        with open(claimed, "rb") as f:
            ours = f.read(1 << 16) == token
        if not ours:
            with contextlib.suppress(FileExistsError):
                os.link(claimed, self.path)
        os.unlink(claimed)
        return self.create(data) if ours else None

    def beat(self, token: bytes, data: bytes) -> bytes | None:
        got = self.read()
        if got is None or got[0] != token:
            return None
        tmp = f"{self.path}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)  # readers see the old lease or the new one, never half
        return data

    def delete(self, token: bytes) -> None:
        got = self.read()
        if got is not None and got[0] == token:
            os.unlink(self.path)


class _S3Store:
    """The lease as an S3 object, changed only by conditional requests. Token: its ETag."""

    def __init__(self, path: str):
        import boto3
        from botocore.config import Config

        self.bucket, _, self.key = path.partition("/")
        conf = Config(connect_timeout=10, read_timeout=10, retries={"max_attempts": 3})
        self.s3 = boto3.session.Session().client("s3", config=conf)

    @staticmethod
    def _refused(e) -> bool:  # a precondition that did not hold, or the object is gone
        return e.response.get("Error", {}).get("Code") in (
            "PreconditionFailed",
            "ConditionalRequestConflict",
            "NoSuchKey",
            "404",
            "412",
            "409",
        )

    def _put(self, data: bytes, **cond) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=data, ContentType="application/json", **cond
            )["ETag"]
        except ClientError as e:
            if self._refused(e):
                return None
            raise

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def read(self) -> tuple[bytes, str, float] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if self._refused(e):
                return None
            raise
        data = obj["Body"].read(1 << 16)
        # the store's own clock on both sides: a skewed local clock does not age a lease
        now = obj["ResponseMetadata"]["HTTPHeaders"].get("date")
        now_t = time.time() if not now else _http_date(now)
        return data, obj["ETag"], now_t - obj["LastModified"].timestamp()

    def take(self, token: str, data: bytes) -> str | None:
        return self._put(data, IfMatch=token)

    beat = take

    def delete(self, token: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except ClientError as e:
            if not self._refused(e):
                raise


def _http_date(value: str) -> float:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(value).timestamp()


def _store(output: str):
    fs, root = filesystem(output)
    if fs.type_name == "s3":
        return _S3Store(f"{root}/{LEASE}")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise LeaseError(f"cannot use {output} as OUTPUT: {e}") from None
    return _LocalStore(os.path.join(root, LEASE))


def _parse(data: bytes) -> dict | None:
    try:
        holder = json.loads(data)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


class Lease:
    """A lease held by this process; `lost` says why, once it is no longer ours."""

    def __init__(self, output: str, store, token, info: dict, ttl_s: float, heartbeat_s: float):
        self.output, self.store, self.token, self.info = output, store, token, info
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.lost: str | None = None
        self.interrupt = False  # on loss, interrupt the main thread (what run() asks for)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mmsent-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            data = _dump({**self.info, "heartbeat": _now()})
            try:
                token = self.store.beat(self.token, data)
            except Exception as e:  # a store error: try again next beat, until too late
                if time.monotonic() - last > self.ttl_s - 2 * self.heartbeat_s:
                    self._lose(f"its heartbeat failed for {time.monotonic() - last:.0f} s ({e})")
                    return
                continue
            if token is None:
                self._lose("another job took it over")
                return
            self.token, last = token, time.monotonic()

    def _lose(self, why: str) -> None:
        self.lost = f"lost the lease on {self.output}: {why}; stopping so as not to mix two jobs"
        print(f"mmsent: {self.lost}", file=sys.stderr)
        if self.interrupt:  # a real signal: it also wakes a main thread blocked in a wait
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)  # a beat stuck on the store: its timeouts bound it
        if self.lost is None:
            with contextlib.suppress(Exception):  # gone with its holder anyway, after TTL_S
                self.store.delete(self.token)


def _describe(holder: dict | None, age: float) -> str:
    if holder is None:
        return "its lease is being written"
    h = holder
    return (
        f"job {h.get('job_id')}, host {h.get('host')}, pid {h.get('pid')}, started "
        f"{h.get('started')}, last heartbeat {age:.0f} s ago"
    )


def _dump(info: dict) -> bytes:
    return json.dumps(info, indent=2).encode() + b"\n"


def acquire(output: str, ttl_s: float = TTL_S, heartbeat_s: float = HEARTBEAT_S) -> Lease:
    """Take the lease on OUTPUT, or take over one whose holder is gone; LeaseError when a job
    that may be alive holds it."""
    store = _store(output)
    info = holder_info(uuid.uuid4().hex)
    for _ in range(5):  # a lease released or taken over while we looked: look again
        token = store.create(_dump(info))
        if token is not None:
            return Lease(output, store, token, info, ttl_s, heartbeat_s)
        got = store.read()
        if got is None:
            continue
        data, old, age = got
        holder = _parse(data)
        why = gone(holder, age, ttl_s)
        if why is None:
            raise LeaseError(
                f"{output} is in use by another mmsent job ({_describe(holder, age)}): wait for "
                f"it to end, or use another OUTPUT. A lease whose job is gone is taken over: at "
                f"once on the job's host, elsewhere {ttl_s:.0f} s after its last heartbeat (or "
                f"delete {LEASE} once you know that job is gone)."
            )
        token = store.take(old, _dump(info))
        if token is not None:
            print(
                f"mmsent: took over the lease on {output} of job "
                f"{(holder or {}).get('job_id')} ({why})",
                file=sys.stderr,
            )
            return Lease(output, store, token, info, ttl_s, heartbeat_s)
    raise LeaseError(f"could not take the lease on {output}: other jobs are starting on it too")


@contextlib.contextmanager
def hold(output: str, ttl_s: float = TTL_S, heartbeat_s: float = HEARTBEAT_S) -> Iterator[Lease]:
    """The lease for the duration of a job: released at the end, on failure too."""
    lease = acquire(output, ttl_s, heartbeat_s)
    lease.interrupt = threading.current_thread() is threading.main_thread()
    try:
        yield lease
    except KeyboardInterrupt:
        if lease.lost:
            raise LeaseError(lease.lost) from None
        raise
    finally:
        lease.release()
    if lease.lost:
        raise LeaseError(lease.lost)
