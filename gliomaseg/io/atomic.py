"""Write files so that a crash never leaves a truncated output behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s suffixes so libraries that choose a
    format by extension (nibabel's ``.nii.gz``) still do. On error it is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_text_atomic(target: Path | str, text: str) -> Path:
    """Atomically replace ``target`` with ``text``, in UTF-8 whatever the locale says (a library
    may switch the process to the C locale, whose ASCII cannot write the non-ASCII signs of the HTML report)."""
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(folder: Path | str, stems: Iterable[str] | None = None) -> int:
    """Delete temporary files a killed process left in ``folder`` (not its subfolders).

    Only names made by :func:`atomic_path` (``.<stem>.<random>.tmp<suffix>``) are
    touched, and with ``stems`` only those of these outputs: a process sharing the
    folder with others (array jobs, torchrun ranks) must not delete their files in flight.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    patterns = [f".{stem}.*.tmp*" for stem in stems] if stems is not None else [".*.tmp*"]
    stale = [p for pattern in patterns for p in folder.glob(pattern) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
