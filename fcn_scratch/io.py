"""Files every command writes: atomically (a crash leaves the old file or the new one, never
half of one), and JSON with NaN and infinities as null.

``atomic_write`` writes a temporary file beside the target, flushes and fsyncs it, then
renames it over the target (``os.replace`` is atomic on POSIX and Windows); temporary
files that a killed process left behind are removed by the next write of the same file.
"""

import glob
import json
import math
import os
import re
import secrets


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Call ``write(f)`` on a new temporary file beside ``path``, fsync it and rename it
    over ``path``; on any failure (Ctrl-C included) remove it and leave ``path`` alone.
    An OSError (no such folder, read-only, disk full, ...) is raised again naming ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OSError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(path)
        name = f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp = os.path.join(folder, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as err:
        raise _cannot_write(path, err) from err
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _cannot_write(path, err) from err
        raise
    _fsync_folder(folder)


def _cannot_write(path: str, err: OSError) -> OSError:
    """``err`` restated with the file it was writing (a disk-full error names none)."""
    return OSError(f"cannot write {path}: {err.strerror or err}")


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove the temporary files of ``path`` (``.<name>.<pid>.<hex>.tmp``) that processes
    no longer running left behind (killed during a save); return what was removed. Those
    with this process's own pid go too: its saves of one file run one at a time, and a
    pid comes back after a restart (a container's training process is often pid 1)."""
    folder, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{base}.") + r"(\d+)\.[0-9a-f]+\.tmp")
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.*.tmp")):
        match = pattern.fullmatch(os.path.basename(tmp))
        pid = int(match.group(1)) if match else None
        if pid is not None and (pid == os.getpid() or not _running(pid)):
            try:
                os.remove(tmp)
                removed.append(tmp)
            except OSError:
                pass  # removed meanwhile, or not ours to remove
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or no valid pid
        return True
    return True


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str, data: dict) -> None:
    """Write ``data`` as JSON (NaN/inf as null), atomically, like the checkpoints."""
    text = json.dumps(_finite(data), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
