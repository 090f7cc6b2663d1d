"""Atomic outputs: a file appears under its final name only when complete (temp + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file lives in the same directory so that ``os.replace`` is atomic on
    POSIX file systems (also on Lustre/GPFS). On error the temporary file is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_file():
        # A rename would replace a folder's entry, or a device such as /dev/null.
        raise IsADirectoryError(f"{target}: exists and is not a regular file; not replaced")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; results are shared files, so honour the umask instead.
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
