"""User-facing errors: a message that names the problem and the fix, printed without a traceback."""


class FewstepError(ValueError):
    """Bad input from the user (config, NFE, schedule, checkpoint). `run.py` prints it as one clean error."""
