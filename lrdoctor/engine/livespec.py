"""A rule's ``live:`` block: when the live engine (``lrdoctor watch``, the training callbacks)
takes a finding found on the run so far as confirmed.

A rule judged on a prefix of a run can fire on evidence that the rest of the run would undo: a
loss spike looks like a divergence until it comes back down, a loss that has not moved *yet*
looks like a plateau. The live engine holds such a finding as provisional and reports it once
it has stood for ``confirm_points`` more points of the rule's first required role *and* the run
has grown to ``confirm_growth`` times its length at the first sighting; a finding whose evidence
matches ``confirm_when`` (e.g. ``{kind: nonfinite}``: a NaN loss cannot be undone) is confirmed
at once (a list gives alternatives; a value may be a comparison such as ``">=10"``). A confirmed finding is withdrawn only after it has been absent for the same span. When
the log ends (the training ends, ``watch`` goes idle) every finding still standing is final.
``doc`` says in words what the live engine reports before the evidence is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RuleSpecError

LIVE_KEYS = ("confirm_points", "confirm_growth", "confirm_when", "doc")


@dataclass(frozen=True)
class LivePolicy:
    confirm_points: int = 0
    confirm_growth: float = 1.0
    #: alternatives, each a mapping of evidence key -> value, or a comparison such as ">=10"
    confirm_when: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    doc: str = ""

    def final_at_once(self, evidence: dict[str, Any]) -> bool:
        return any(all(_matches(evidence.get(k), v) for k, v in alt.items()) for alt in self.confirm_when)


_OPS = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}


def _comparison(want: Any) -> tuple[Any, float] | None:
    if not isinstance(want, str):
        return None
    for sym in (">=", "<=", ">", "<"):
        if want.startswith(sym):
            try:
                return _OPS[sym], float(want[len(sym):])
            except ValueError:
                return None
    return None


def _matches(got: Any, want: Any) -> bool:
    cmp = _comparison(want)
    if cmp is None:
        return got == want
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return False
    op, bound = cmp
    return bool(op(float(got), bound))


def parse_live(data: Any, where: str) -> LivePolicy:
    if data is None:
        return LivePolicy()
    if not isinstance(data, dict):
        raise RuleSpecError("'live' must be a mapping (confirm_points, confirm_growth, confirm_when, doc)", path=where)
    for key in data:
        if key not in LIVE_KEYS:
            raise RuleSpecError(f"unknown key 'live.{key}' (keys: {', '.join(LIVE_KEYS)})", path=where)
    points = data.get("confirm_points", 0)
    growth = data.get("confirm_growth", 1.0)
    when = data.get("confirm_when") or []
    if isinstance(points, bool) or not isinstance(points, int) or points < 0:
        raise RuleSpecError("'live.confirm_points' must be an integer >= 0", path=where)
    if isinstance(growth, bool) or not isinstance(growth, (int, float)) or growth < 1.0:
        raise RuleSpecError("'live.confirm_growth' must be a number >= 1", path=where)
    alternatives = [when] if isinstance(when, dict) else when
    if not isinstance(alternatives, list) or not all(isinstance(a, dict) and a for a in alternatives):
        raise RuleSpecError("'live.confirm_when' must be a mapping of evidence key: value (or '>=N'), "
                            "or a list of them", path=where)
    for alt in alternatives:
        for key, want in alt.items():
            if isinstance(want, str) and want[:1] in "<>" and _comparison(want) is None:
                raise RuleSpecError(f"'live.confirm_when.{key}': {want!r} is not a comparison like '>=10'",
                                    path=where)
    doc = data.get("doc", "")
    if not isinstance(doc, str):
        raise RuleSpecError("'live.doc' must be a string", path=where)
    return LivePolicy(int(points), float(growth), tuple(dict(a) for a in alternatives), " ".join(doc.split()))
