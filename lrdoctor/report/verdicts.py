"""Read verdicts back from the JSON that ``lrdoctor verify --json`` prints, and pair them with runs.

``{"runs": [{"name": ..., "source": ..., "verdicts": [{"rule", "proposal_id", "kind", "verdict",
"seeds", "p_value", "ci", "p_better", "reason"[, "details"]}]}]}``. ``source`` (the run's resolved
path) is optional: older files lack it.

``details`` (per-seed statistics and the reruns' curves under "curves") is optional; the verify
command writes it as strict JSON, with non-finite numbers in lists as "nan"/"inf"/"-inf" strings,
which are turned back into floats here so a diverged rerun's curve keeps its NaN markers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..model import RerunCurves, Run, Verdict, VerdictKind
from .untrusted import checked_runs

_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


@dataclass(frozen=True)
class RunVerdicts:
    """One run's entry in a verdicts file."""

    name: str
    source: str | None
    verdicts: tuple[Verdict, ...]


def _numbers(x):
    if isinstance(x, list):
        return [_NON_FINITE.get(i, i) if isinstance(i, str) else _numbers(i) for i in x]
    if isinstance(x, dict):
        return {k: _numbers(v) for k, v in x.items()}
    return x


def _verdict(d: dict) -> Verdict:
    ci = d.get("ci")
    details = _numbers(dict(d.get("details") or {}))
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
        details=details,
        curves=RerunCurves.from_json(details.pop("curves", None)),
        symptom_curves=RerunCurves.from_json(details.pop("symptom_curves", None)),
    )


def read_verdicts(path: str | Path) -> list[RunVerdicts]:
    """Every run entry of a verdicts file, in file order. The file is untrusted: anything but the
    shape verify writes is one :class:`~lrdoctor.report.untrusted.VerdictsFileError` naming where."""
    try:
        runs = checked_runs(path)
    except OSError as exc:
        raise UsageError(f"cannot read the verdicts file: {exc.strerror or exc}", path=str(path)) from exc
    return [RunVerdicts(r["name"], r["source"], tuple(_verdict(v) for v in r["verdicts"])) for r in runs]


def load_verdicts(path: str | Path) -> dict[str, list[Verdict]]:
    """``{run name: [Verdict, ...]}`` (names as verify saw them; see :func:`match_verdicts`)."""
    return {e.name: list(e.verdicts) for e in read_verdicts(path)}


def as_entries(verdicts: Mapping[str, Sequence[Verdict]] | Sequence[RunVerdicts]) -> list[RunVerdicts]:
    """A ``{name or source path: verdicts}`` mapping as entries; entries pass through."""
    if isinstance(verdicts, Mapping):
        return [RunVerdicts(str(k), str(k), tuple(v)) for k, v in verdicts.items()]
    return list(verdicts)


def _resolved(p: str | None) -> str | None:
    if not p:
        return None
    try:
        return str(Path(p).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return None


def match_verdicts(runs: Sequence[Run], entries: Sequence[RunVerdicts]
                   ) -> tuple[dict[int, tuple[Verdict, ...]], list[RunVerdicts]]:
    """Pair verdict entries with runs: by resolved source path, else by name.

    A run's name depends on the path it was discovered from (``verify runA`` names it ``gru-0``,
    ``report logs`` names it ``runA/gru-0``), so the path is the fallback that survives that.
    Returns ``{index in runs: verdicts}`` and the entries that matched no run.
    """
    by_name: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        by_name.setdefault(run.name, []).append(i)
        src = _resolved(run.source)
        if src:
            by_source.setdefault(src, []).append(i)
    matched: dict[int, tuple[Verdict, ...]] = {}
    unmatched: list[RunVerdicts] = []
    for e in entries:
        # The path first when there is one: two runs in different trees may share a name.
        hits = by_source.get(_resolved(e.source) or "") or by_name.get(e.name)
        if not hits:
            unmatched.append(e)
            continue
        for i in hits:
            matched[i] = matched.get(i, ()) + e.verdicts
    return matched, unmatched
