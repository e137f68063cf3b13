"""User-facing errors: a message that names the problem and the fix, printed without a traceback."""


class FewstepError(ValueError):
    """Bad input from the user (config, NFE, schedule, checkpoint). `run.py` prints it as one clean error."""


class NonFiniteError(FewstepError):
    """A stage produced NaN/inf (samples, warm-up costs, statistics, metrics): nothing of it is cached or written."""


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT arrived: the run stops (what is written stays) and `run.py` says how to resume.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)
