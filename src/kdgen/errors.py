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
