"""Run folders and their records, written atomically so a killed job never leaves a half-written file.

<output_root>/<run_id>/
    config.yaml     resolved config
    env.json        provenance (git commit, versions, device, host)
    metrics.jsonl   one JSON event per line, flushed as written
    checkpoint.pt   latest training state (atomic)
    model.pt        the final (compressed) model (atomic)
    result.json     written last: status completed | failed | stopped, metrics or the error
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import LcbenchError, RunLockedError
from .integrity import file_problem
from .record import IDENTITY, summary_paths

log = logging.getLogger("lcbench")
RESULT = "result.json"
UNTRUSTED = "UntrustedRecord"  # the error type of a run whose folder another user could have written
# The columns `lcbench results` shows first (and alone unless --all-columns).
SUMMARY_COLUMNS = [
    "run_id",
    "status",
    *(f"config.{key}" for key in IDENTITY[2:]),
    *summary_paths(headline_only=True),
    "error.message",
]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None so every record is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), default=_json_default, indent=indent, allow_nan=False)


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A temp file in `path`'s folder with the mode any other writer would give it (0666 less the umask;
    mkstemp alone makes it 0600, so colleagues on a shared cluster could not read the record)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


class StorageError(LcbenchError, OSError):
    """Writing a file under the output root failed: a full disk, a quota, a read-only or unwritable
    folder. An OSError too, so code that handles one handles this."""


# What each storage errno means for the user: the fix to name.
_STORAGE_FIXES = {
    errno.ENOSPC: "free space there or choose another folder",
    errno.EDQUOT: "free space within your quota or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.EACCES: "make the folder writable for you or choose another folder",
    errno.EPERM: "make the folder writable for you or choose another folder",
}
WHERE = "output_root=PATH for runs and sweeps, --out DIR for a report"


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind `e`, itself or in its chain (torch.save reports a full disk as a RuntimeError
    raised while handling the OSError of the failed write)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def storage_error(e: BaseException, path: Path | None = None) -> StorageError | None:
    """A one-line StorageError for `e` (a failed write of `path` when given), or None when `e` is not
    about storage (a full disk, a quota, a read-only or unwritable folder)."""
    if isinstance(e, StorageError):
        return e
    os_error = os_error_in(e)
    if os_error is None or os_error.errno not in _STORAGE_FIXES:
        return None
    what = f"could not write {path}" if path is not None else str(os_error.filename or "a file")
    error = StorageError(
        f"{what}: {os_error.strerror or os_error}; {_STORAGE_FIXES[os_error.errno]} ({WHERE})"
    )
    error.errno = os_error.errno
    return error


def _write_via_temp(path: Path, write: Any) -> None:
    """Write through a temp file beside `path` (`write(file)`), fsync, then rename over `path`. On any
    error the temp file is closed and removed first (an open deleted file still fills the disk), and a
    storage error becomes a one-line StorageError."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = temp_file_beside(path)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        error = storage_error(e, path) if isinstance(e, Exception) else None
        if error is not None and error is not e:
            raise error from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    _write_via_temp(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save through a temp file + rename: the previous file stays valid if this write fails."""
    import torch  # here, not at the top: the local queue's supervisor reads and writes JSON only

    _write_via_temp(path, lambda f: torch.save(obj, f))


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object (a record of the
    wrong shape counts as no record, never a crash of status, results or report)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class UnsafeRunFolder(LcbenchError):
    """A run folder (or a path in it) another user could have planted: never adopted, never followed."""


def check_own_folder(path: Path, what: str = "run folder", fix: str = "") -> None:
    """`path` must be a real folder (not a symbolic link) owned by this user and not writable by every
    user: on a shared output root, run ids are predictable, so another user could create a run's folder
    first and plant links or records in it. `fix`: what the message tells the user to do instead."""
    why = "" if fix else "; another user may have created it to subvert this run"
    _check_own(path, what, stat.S_ISDIR, "a folder", why, fix)


def check_own_file(path: Path, what: str = "record") -> None:
    """`path`, where it exists, must be a regular file (not a link) owned by this user and not writable by
    every user: a record another user could have written never enters a status or a report."""
    _check_own(path, what, stat.S_ISREG, "a regular file")


def _check_own(path: Path, what: str, is_kind, kind: str, why: str = "", fix: str = "") -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    fix = fix or "remove it (or choose another output_root=PATH) and run again"
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRunFolder(f"{what} {path} is a symbolic link; lcbench never follows one: {fix}")
    if not is_kind(info.st_mode):
        raise UnsafeRunFolder(f"{what} {path} is not {kind}: {fix}")
    if info.st_uid != os.getuid():
        raise UnsafeRunFolder(
            f"{what} {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}){why}: {fix}"
        )
    if info.st_mode & stat.S_IWOTH:
        raise UnsafeRunFolder(
            f"{what} {path} is writable by every user (mode {stat.S_IMODE(info.st_mode):o}): {fix}"
        )


def open_no_follow(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses a symbolic link at `path` (a planted link would redirect our writes)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeRunFolder(
                f"{path} is a symbolic link; lcbench never writes through one: remove it and run again"
            ) from None
        raise


class RunDir:
    """One run's folder: its files, its lock and its metrics log. `writes=False` (the other ranks of a DDP
    run, whose rank 0 keeps the records): the same paths to read, and logging events writes nothing."""

    def __init__(self, root: str | Path, run_id: str, writes: bool = True) -> None:
        self.path = Path(root) / run_id
        self.run_id = run_id
        self.writes = writes
        self._lock_file = None

    # paths
    config_path = property(lambda self: self.path / "config.yaml")
    env_path = property(lambda self: self.path / "env.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    model_path = property(lambda self: self.path / "model.pt")
    result_path = property(lambda self: self.path / RESULT)

    def create(self) -> None:
        """Make the folder (or adopt it when it is this user's own), failing clearly when the output root
        is not writable."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            check_own_folder(self.path)
            fd, probe = temp_file_beside(self.path / "write-test")
            try:
                with os.fdopen(fd, "wb") as f:  # a byte, flushed: a full disk still creates empty files
                    f.write(b"ok")
                    f.flush()
            finally:
                os.unlink(probe)
        except OSError as e:
            raise storage_error(e, self.path) or LcbenchError(
                f"cannot write run records to {self.path}: {e.strerror or e}. "
                "Choose a writable folder with output_root=PATH."
            ) from e

    def lock(self) -> None:
        """Hold an exclusive lock for the lifetime of this process (two processes never run one run)."""
        fd = open_no_follow(self.path / ".lock", os.O_WRONLY | os.O_CREAT)
        self._lock_file = os.fdopen(fd, "w")  # held until release()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RunLockedError(
                f"run {self.run_id} is being executed by another process ({self.path})"
            ) from None
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Temp files of writes killed mid-way (`.<name>.<random>.tmp`, a full checkpoint each on an
        ImageNet model): with the run's lock held, no live write of this run can own them."""
        for folder in (self.path, self.path / "control" / "acks"):
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)

    def wait_unlocked(self) -> None:
        """Block until no process holds this run's lock (a shared lock: it never blocks another waiter)."""
        fd = open_no_follow(self.path / ".lock", os.O_RDONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def result(self) -> dict | None:
        return read_json(self.result_path)

    def check_trusted(self) -> None:
        """Raise `UnsafeRunFolder` when this run's folder or a file in it could have been written by
        another user: a report, `status`, `measure`, `export` and `--only-failed` never take a value from
        such a record."""
        try:
            check_own_folder(self.path)
            with os.scandir(self.path) as entries:  # its records: result, env, examples, latencies, model
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        check_own_file(Path(entry.path), "file")
        except FileNotFoundError:
            return

    def trust_problem(self) -> str:
        """Why `check_trusted` refuses this run ('' when it does not)."""
        try:
            self.check_trusted()
        except UnsafeRunFolder as e:
            return str(e)
        return ""

    def is_completed(self) -> bool:
        result = self.result()
        return bool(result and result.get("status") == "completed" and not self.record_problem(result))

    def record_problem(self, record: dict) -> str:
        """Why a completed record cannot be used ('' when it can): one without its run id and final
        metrics (a hollow `{"status": "completed"}`), or one whose model file or per-example records are
        missing or differ from what it recorded of them (size, then SHA-256 where their stamp changed)."""
        if record.get("status") != "completed":
            return ""
        final = record.get("final")
        if record.get("run_id") != self.run_id or not isinstance(final, dict) or not final:
            return f"its record {self.result_path} is incomplete (no run id or final metrics): rerun it"
        model = record.get("model_file")
        kept = record.get("examples")
        problems = [
            file_problem(self.model_path, model, "model file") if isinstance(model, dict) else "",
            file_problem(self.path / kept["file"], kept, "per-example records")
            if isinstance(kept, dict) and isinstance(kept.get("file"), str) and "/" not in kept["file"]
            else "",
        ]
        return next((p for p in problems if p), "")

    # metrics
    def log(self, event: str, **fields: Any) -> None:
        """Append one event to metrics.jsonl and flush it to disk."""
        if not self.writes:
            return
        line = dumps({"event": event, **fields}) + "\n"
        fd = open_no_follow(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def metrics_size(self) -> int:
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Drop events written after a checkpoint (used when resuming from that checkpoint)."""
        if self.writes and self.metrics_path.exists() and self.metrics_path.stat().st_size > size:
            fd = open_no_follow(self.metrics_path, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)

    def events(self, event: str | None = None) -> list[dict]:
        return list(iter_events(self.metrics_path, event))


def iter_events(path: Path, event: str | None = None) -> Iterator[dict]:
    if not Path(path).exists():
        return
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not a JSON event (skipped): %.80s", path, number, line)
                continue
            if not isinstance(record, dict):
                log.warning("%s:%d is not a JSON object (skipped)", path, number)
                continue
            if event is None or record.get("event") == event:
                yield record


def load_records(root: str | Path) -> list[dict]:
    """Every run under `root`: its result.json, or a `running`/`incomplete` stub from its config."""

    records = []
    root = Path(root)
    if not root.is_dir():
        raise LcbenchError(f"no run records: {root} is not a folder")
    for run_path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        untrusted = RunDir(root, run_path.name).trust_problem()
        if untrusted:  # listed as failed, nothing read from it
            error = {"type": UNTRUSTED, "message": untrusted}
            records.append(
                {"run_id": run_path.name, "status": "failed", "error": error, "run_dir": str(run_path)}
            )
            continue
        result = read_json(run_path / RESULT)
        if result is None:
            if not (run_path / "config.yaml").exists():
                continue
            try:
                config = yaml.safe_load((run_path / "config.yaml").read_text())
            except yaml.YAMLError:
                config = {}
            result = {"run_id": run_path.name, "status": live_status(run_path), "config": config}
        result["run_dir"] = str(run_path)
        records.append(result)
    return records


def live_status(run_path: Path) -> str:
    """`running` if a process holds the run's lock, else `incomplete` (killed, never finished)."""
    lock = run_path / ".lock"
    if not lock.exists():
        return "incomplete"
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running"
        fcntl.flock(f, fcntl.LOCK_UN)
    return "incomplete"


def headline_columns(table) -> list[str]:
    """`lcbench results`' columns for these records: identity, each data set's own headline metric and its
    change (perplexity for a language model, not its next-token top-1), cost, error; never the latency
    timed inside a run beside other runs."""
    metrics = set(table["metric"].dropna()) if "metric" in table else set()
    own = [p for m in sorted(metrics - {"top1"}) for p in (f"final.{m}", f"delta_{m}")]
    skip = {"final.latency_ms_b1"}
    if metrics and "top1" not in metrics:
        skip |= {"final.top1", "delta_top1"}
    columns = []
    for column in SUMMARY_COLUMNS:
        if column == "compression":
            columns += own  # where top-1 stands, before the cost columns
        if column not in skip:
            columns.append(column)
    return [c for c in dict.fromkeys(columns) if c in table.columns]


def records_table(root: str | Path):
    """All run records as one flat pandas DataFrame (nested keys joined with dots)."""
    import pandas as pd  # only for tables (`lcbench results`, reports): runs never need it

    records = load_records(root)
    if not records:
        return pd.DataFrame(columns=["run_id", "status"])
    table = pd.json_normalize(records, sep=".")
    first = [c for c in SUMMARY_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]
