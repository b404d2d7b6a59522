"""One exception type per kind of user error.

The CLI catches :class:`LrdoctorError` once, prints ``str(err)`` as a single line on stderr and
exits with code 2 (a traceback only with ``--debug``). Library code raises these, never prints.
"""

from __future__ import annotations


class LrdoctorError(Exception):
    """Base class of every error that is the user's input, not a bug in lrdoctor."""

    def __init__(self, message: str, *, path: str | None = None, location: str | None = None):
        self.message = message
        self.path = path
        self.location = location
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = str(self.path)
            if self.location:
                where += f" ({self.location})"
            where += ": "
        return where + self.message


class LogFormatError(LrdoctorError):
    """A log file is malformed, corrupt, or of no supported format."""


class LeftOut(LogFormatError):
    """Something under a searched tree that is left out for a reason that is no fault of the
    tree while other runs in it are read: a run that logged no metrics (an MLflow parent run that
    only groups its nested runs, a run that crashed before its first log), a file named like a
    log that no reader knows. The commands print it as a note and keep their exit status; when
    nothing else under the path can be read it is the error (exit 2)."""


class EmptyRunError(LeftOut):
    """A run that holds no metric values."""


class NoRunsFoundError(LrdoctorError):
    """A path holds no training run lrdoctor can read."""


class RuleSpecError(LrdoctorError):
    """A rule file (YAML) is invalid, or a --set override names an unknown rule/parameter."""


class RoleSpecError(LrdoctorError):
    """A --role override or roles config is malformed."""


class UsageError(LrdoctorError):
    """Options that do not fit together or name something that does not exist."""


class VerifyError(LrdoctorError):
    """A run cannot be rerun, or a rerun command is misconfigured."""
