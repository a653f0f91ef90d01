"""The one exception type kdgen raises for a user's mistake.

Its message is one sentence that names the problem and the fix. The CLI prints it without a
traceback and exits with status 2; the Python API lets it propagate.

Messages are written once, naming command-line flags (`--opset 25 is outside ...`). A Python caller
never passed a flag, so `str(error)` names the parameter instead (`opset 25 is outside ...`); the CLI
prints `error.cli_message`. Flags inside backticks are commands to type and stay as they are.
"""

from __future__ import annotations

import re

_FLAG = re.compile(r"`[^`]*`|(?<![\w.-])--([a-z][a-z-]*)")


def as_parameters(message: str) -> str:
    """`--save-features` -> `save_features`, outside backticks."""
    return _FLAG.sub(lambda m: m.group(0) if m.group(1) is None else m.group(1).replace("-", "_"), message)


class KdgenError(ValueError):
    """A user error (bad config, missing file, shape mismatch, NaN loss ...). A ValueError, so callers that catch
    bad values catch it too."""

    def __init__(self, message: str = ""):
        self.cli_message = str(message)
        super().__init__(as_parameters(self.cli_message))


def os_error_sentence(e: OSError) -> str:
    """An OS error a user can cause (disk full, read-only, permissions, a folder or file in the way) as one sentence
    naming the path and the fix."""
    import errno

    where = f"'{e.filename}'" if e.filename else "a file"
    fixes = {
        errno.ENOSPC: f"the disk is full writing {where}; free some space (or give another out= on another disk) and rerun with --resume",
        errno.EDQUOT: f"the disk quota is used up writing {where}; free some space and rerun with --resume",
        errno.EROFS: f"{where} is on a read-only file system; give an out= (or --out) on a writable disk",
        errno.EACCES: f"no permission to use {where}; fix its permissions or give another path",
        errno.EPERM: f"no permission to use {where}; fix its permissions or give another path",
        errno.EISDIR: f"{where} is a folder where kdgen needs a file; give a file name (e.g. one inside that folder)",
        errno.ENOTDIR: f"a file is in the way of the folder {where}; give another path",
        errno.ENOENT: f"{where} (or a folder on its way) does not exist and cannot be made; check the path",
        errno.EEXIST: f"{where} already exists and is in the way; remove it or give another path",
        errno.ENAMETOOLONG: f"the path {where} is too long; give a shorter one",
        errno.EMFILE: "too many files are open; lower data.workers and retry",
    }
    return fixes.get(e.errno, f"the operating system refused {where} ({e.strerror or type(e).__name__}); check the path and the disk")
