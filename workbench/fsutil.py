"""File helpers every reader and writer shares: atomic writes of files and directories, JSON reads, file hashes, touches."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, error: type[Exception], problem: str = "malformed JSON"):
    """The JSON value in a file; text that does not parse raises `error` as '{path}: {problem} ({reason})'."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: {problem} ({e})") from None


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write a file through a temporary sibling and a rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(out: str | Path):
    """Yield a temporary sibling directory to fill; on success it replaces `out`, on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()  # mkdir, not mkdtemp: the directory gets the umask's permissions like any other
    try:
        yield tmp
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        try:
            os.rename(out, old)
        except FileNotFoundError:  # nothing to replace, or `wb cache prune` removed it meanwhile
            old = None
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def touch(path: str | Path) -> None:
    """Mark a cache directory as just used by setting its mtime to now; a read-only cache is left as it is."""
    try:
        os.utime(path)  # one metadata write: cheap, atomic, and no file appears that a reader could see half-made
    except OSError:
        pass
