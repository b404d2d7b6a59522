"""A warning that every poll would repeat is said once while its problem lasts.

Following a tree means discovering it again at every poll, and discovery warns about what it
cannot read (a file or directory without read permission, a dangling link, a FIFO) each time it
meets it: at ``--interval 2`` that is the same line every two seconds, burying the findings. Here
a warning is let through when it was not given at the poll before, so it is said once when a
problem appears, not again while it stays, and again if it goes away and comes back (the user
may want to know that the file they fixed broke again). The message names the path and the
reason, so a path whose reason changes (unreadable, then not a regular file) is warned again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class RepeatedWarnings(logging.Filter):
    """Drops a warning (or worse) that was also given during the previous poll."""

    def __init__(self) -> None:
        super().__init__()
        self._before: set[str] = set()
        self._now: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = f"{record.name}|{record.getMessage()}"
        self._now.add(text)
        return text not in self._before

    @contextmanager
    def poll(self, prefix: str = "lrdoctor") -> Iterator[None]:
        """Within: one poll. A logger's filter sees only the records logged through that logger
        (not those its children propagate), so it goes on every ``prefix`` logger there is; the
        modules that warn while reading are imported before the first poll."""
        names = [prefix, *(n for n in logging.Logger.manager.loggerDict if n.startswith(prefix + "."))]
        loggers = [logging.getLogger(n) for n in names]
        for lg in loggers:
            lg.addFilter(self)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(self)
            self._before, self._now = self._now, set()
