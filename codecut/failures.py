"""How a command's failure is reported: one line on stderr, never a traceback; a bug's
traceback goes to a log file the line names (under `cache_dir()/logs/`)."""

from __future__ import annotations

import sys
import time
from contextlib import suppress
from pathlib import Path


def close_progress_bars() -> None:
    """Close the progress bars an error left open, so the error starts on a line of its own.

    A bar interrupted by an exception stays open (its loop's frame lives on in the traceback)
    with the cursor at the end of its line; closing it clears it (or, for a bar that stays,
    ends its line)."""
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        with suppress(OSError, ValueError):  # its stream closed or broken: nothing to clear
            bar.close()


def one_line(e: BaseException) -> str:
    """An exception's message on one line (long messages shortened)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def write_traceback(e: BaseException) -> Path:
    """Write `e`'s traceback and the command line to a new log file; return its path.

    The file goes to `cache_dir()/logs/` (a temporary directory if that cannot be written)."""
    import tempfile
    import traceback

    from codecut.core.models import cache_dir

    text = f"codecut {' '.join(sys.argv[1:])}\n\n" + "".join(
        traceback.format_exception(type(e), e, e.__traceback__)
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"codecut-{stamp}-", suffix=".log", dir=folder)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return Path(name)
        except OSError:
            continue
    return Path("(nowhere: no writable log folder)")
