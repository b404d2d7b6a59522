"""Read verdicts back from the JSON that ``lrdoctor verify --json`` prints.

``{"runs": [{"name": ..., "verdicts": [{"rule", "proposal_id", "kind", "verdict", "seeds",
"p_value", "ci", "p_better", "reason"[, "details"]}]}]}`` -> ``{run name: [Verdict, ...]}``.

``details`` (per-seed statistics and the reruns' curves under "curves") is optional; the verify
command writes it as strict JSON, with non-finite numbers in lists as "nan"/"inf"/"-inf" strings,
which are turned back into floats here so a diverged rerun's curve keeps its NaN markers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..model import Verdict, VerdictKind

_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _numbers(x):
    if isinstance(x, list):
        return [_NON_FINITE.get(i, i) if isinstance(i, str) else _numbers(i) for i in x]
    if isinstance(x, dict):
        return {k: _numbers(v) for k, v in x.items()}
    return x


def _verdict(d: dict) -> Verdict:
    ci = d.get("ci")
    return Verdict(
        rule=str(d.get("rule") or ""),
        proposal_id=str(d["proposal_id"]),
        kind=str(d.get("kind") or ""),
        verdict=VerdictKind(d["verdict"]),
        seeds=tuple(int(s) for s in d.get("seeds") or ()),
        p_value=None if d.get("p_value") is None else float(d["p_value"]),
        ci=None if ci is None else (float(ci[0]), float(ci[1])),
        p_better=None if d.get("p_better") is None else float(d["p_better"]),
        reason=str(d.get("reason") or ""),
        details=_numbers(dict(d.get("details") or {})),
    )


def load_verdicts(path: str | Path) -> dict[str, list[Verdict]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {str(r["name"]): [_verdict(v) for v in r.get("verdicts") or ()] for r in data["runs"]}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UsageError(
            f"not a verdicts file from 'lrdoctor verify --json' ({type(exc).__name__}: {exc})", path=str(path)
        ) from exc
