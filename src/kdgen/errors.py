"""The one exception type kdgen raises for a user's mistake.

Its message is one sentence that names the problem and the fix. The CLI prints it without a
traceback and exits with status 2; the Python API lets it propagate.
"""


class KdgenError(ValueError):
    """A user error (bad config, missing file, shape mismatch, NaN loss ...). A ValueError, so callers that catch
    bad values catch it too."""
