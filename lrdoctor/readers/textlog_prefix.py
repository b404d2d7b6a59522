"""What a logger or launcher puts before a printed message, stripped before shape matching.

``logging``'s formatters (``2026-12-02 19:30:38,123 - INFO - __main__ - Step: 5, Loss: 2.3``,
``INFO:__main__:Step: 5``), Hydra's ``[ts][__main__][INFO] - ``, loguru's ``ts | INFO | mod:fn:42 - ``,
HF accelerate's ``12/02/2026 19:30:01 - INFO - __main__ - `` and fairseq's ``ts | INFO | train_inner |``
put a timestamp, a level and a logger name (or ``file:line``) before the message; torchrun and
torch.distributed put ``[default0]:`` / ``[rank0]:``. Left in place, the `` - name: value`` after
such a prefix looks like Keras's epoch line and the message's own counter was read as a metric
(a diverged run passed as healthy). The prefix is read segment by segment from the line's start,
each segment a bounded pattern tried once (linear in the line's length, like the shapes).
"""

from __future__ import annotations

import re

_TS = re.compile(r"\[?(?:(?:\d{4}-\d{2}-\d{2}|\d{4}/\d{2}/\d{2}|\d{2}/\d{2}/\d{4})[ T])?\d{2}:\d{2}:\d{2}"
                 r"(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?(?![\w:])")
_LEVEL = re.compile(r"\[?(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|TRACE|SUCCESS|NOTICE)\]?(?!\w)")
_RANK = re.compile(r"\[(?:rank|default)(\d+)\]:?")
#: A logger name or loguru's ``module:function:line``, only after a timestamp or level and only
#: when a separator follows it (``INFO - step 5 - loss`` keeps ``step 5``; ``INFO loss: 2.3``
#: keeps ``loss``: a colon followed by a number is a pair, not the end of a name).
_NAME = re.compile(r"\[[\w.<>:|-]+\]|[A-Za-z_<][\w.<>-]*(?::[\w.<>]+)*(?=\s+[-|]\s|\]|:(?!\s*[-+]?(?:\d|\.\d|(?i:nan|inf)))|\s*$)")
_SEP = re.compile(r"\]?\s*(?:[-|:]\s*)?")


def strip_prefix(line: str) -> tuple[str, int | None]:
    """The message after a logging/launcher prefix, and the rank the prefix names (or None).
    A line without a timestamp, level or rank prefix is returned as it is."""
    pos = len(line) - len(line.lstrip())
    rank: int | None = None
    seen = False  # a timestamp or a level: only then can a name segment be a logger's
    cut = 0
    for _ in range(8):  # a prefix has a few segments; a bound keeps odd lines cheap
        m = _RANK.match(line, pos)
        if m:
            rank = int(m.group(1)) if rank is None else rank
        else:
            m = _TS.match(line, pos) or _LEVEL.match(line, pos)
            if m:
                seen = True
            elif seen:
                m = _NAME.match(line, pos)
        if not m:
            break
        cut = _SEP.match(line, m.end()).end()
        pos = cut
    return (line[cut:], rank) if cut else (line, None)
