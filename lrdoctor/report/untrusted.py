"""A verdicts file is untrusted input: checked against the shape ``verify --json`` writes.

Whoever hands ``report --verdicts FILE`` a file may have edited it, truncated it, or built it to
hurt: wrong types, arrays of millions of points, nesting thousands deep, HTML in strings. Each
must end in one error line naming the place in the file (``runs[0].verdicts[2].p_value``), not a
traceback during drawing, a hang, or a page that runs script. Strings are only ever shown through
jinja2's autoescaping; here they are bounded in length.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..model import VerdictKind

#: verify writes a few hundred KB per verdict; a file over this is not one of its files
MAX_FILE_BYTES = 256 * 2**20
#: verify's files nest 7 levels deep (runs[].verdicts[].details.curves.baseline.<seed>.values)
MAX_DEPTH = 32
#: points per rerun curve: verify writes at most ~500, the report draws at most ~1,000
MAX_POINTS = 100_000
#: characters kept of a string (a reason holds a stderr tail of 15 lines)
MAX_TEXT = 20_000
CURVE_KEYS = ("curves", "symptom_curves", "baseline_curves", "candidate_curves")
_NON_FINITE = ("nan", "inf", "-inf")


class VerdictsFileError(UsageError):
    """The verdicts file is not what ``lrdoctor verify --json`` writes."""


def _fail(path: str, where: str, what: str) -> VerdictsFileError:
    return VerdictsFileError(f"not a verdicts file from 'lrdoctor verify --json': {where}: {what}", path=path)


def _type(x: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number")


def _depth(x: Any) -> int:
    """Nesting depth, without recursion (a 100,000-deep array must not overflow the stack here)."""
    deepest, stack = 0, [(x, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((c, d + 1) for c in (node.values() if isinstance(node, dict) else node))
    return deepest


def load_json(path: str | Path) -> Any:
    """Parse the file, bounded in size and depth."""
    p = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise _fail(p, "file", f"{size / 2**20:.0f} MB, more than the {MAX_FILE_BYTES // 2**20} MB limit")
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(p, f"byte {exc.start}", "not UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _fail(p, "file", "nested too deeply to parse") from None
    except ValueError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "file"
        raise _fail(p, where, f"invalid JSON ({getattr(exc, 'msg', exc)})") from None
    if _depth(data) > MAX_DEPTH:
        raise _fail(p, "file", f"nested more than {MAX_DEPTH} levels deep")
    return data


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, what: str) -> VerdictsFileError:
        return _fail(self.path, where, what)

    def kind(self, x: Any, where: str, *types: type, null: bool = False) -> Any:
        if (x is None and null) or (isinstance(x, types) and not (isinstance(x, bool) and bool not in types)):
            return x
        want = " or ".join(dict.fromkeys(_type(t()) for t in types)) + (" or null" if null else "")
        raise self.fail(where, f"expected {want}, got {_type(x)}")

    def number(self, x: Any, where: str, null: bool = True) -> float | None:
        if isinstance(x, str) and x in _NON_FINITE:
            return float(x)
        return self.kind(x, where, int, float, null=null)

    def text(self, x: Any, where: str) -> str:
        s = self.kind(x, where, str, null=True) or ""
        return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + " … (cut)"

    def curve(self, c: Any, where: str) -> None:
        c = self.kind(c, where, dict, list)
        if isinstance(c, list):  # the [steps, values] pair the report also accepts
            if len(c) != 2:
                raise self.fail(where, f"expected [steps, values], got an array of {len(c)}")
            c = {"steps": c[0], "values": c[1]}
        steps = self.kind(c.get("steps"), f"{where}.steps", list)
        values = self.kind(c.get("values"), f"{where}.values", list)
        if len(steps) != len(values):
            raise self.fail(where, f"{len(steps)} steps but {len(values)} values")
        if len(steps) > MAX_POINTS:
            raise self.fail(where, f"{len(steps):,} points, more than the {MAX_POINTS:,} limit (verify writes ~500)")
        for name, xs in (("steps", steps), ("values", values)):
            bad = next((i for i, v in enumerate(xs) if not (
                (isinstance(v, (int, float)) and not isinstance(v, bool)) or v in _NON_FINITE)), None)
            if bad is not None:
                raise self.fail(f"{where}.{name}[{bad}]", f"expected a number, got {_type(xs[bad])}")
        if any(isinstance(s, str) or not math.isfinite(s) for s in steps):
            raise self.fail(f"{where}.steps", "a step is not a finite number")

    def curves(self, cs: Any, where: str) -> None:
        cs = self.kind(cs, where, dict)
        self.text(cs.get("metric"), f"{where}.metric")
        arms = [(a, cs[a]) for a in ("baseline", "candidate") if a in cs]
        if "steps" in cs or "values" in cs:  # the <arm>_curves shape: seed -> curve directly
            raise self.fail(where, "expected seeds, got a single curve")
        for arm, seeds in arms or [("", cs)]:
            at = f"{where}.{arm}" if arm else where
            for seed, c in self.kind(seeds, at, dict).items():
                if seed == "metric" and not arm:
                    continue
                try:
                    int(seed)
                except ValueError:
                    raise self.fail(f"{at}", f"seed {seed[:40]!r} is not an integer") from None
                self.curve(c, f"{at}.{seed}")

    def verdict(self, v: Any, where: str) -> dict[str, Any]:
        v = self.kind(v, where, dict)
        out = {k: self.text(v.get(k), f"{where}.{k}") for k in ("rule", "kind", "reason")}
        out["proposal_id"] = self.text(self.kind(v.get("proposal_id"), f"{where}.proposal_id", str), where)
        kinds = [k.value for k in VerdictKind]
        if v.get("verdict") not in kinds:
            raise self.fail(f"{where}.verdict", f"expected one of {', '.join(kinds)}, got {str(v.get('verdict'))[:40]!r}")
        seeds = self.kind(v.get("seeds"), f"{where}.seeds", list, null=True) or []
        for i, s in enumerate(seeds):
            self.kind(s, f"{where}.seeds[{i}]", int)
        for k in ("p_value", "p_better"):
            self.number(v.get(k), f"{where}.{k}")
        ci = self.kind(v.get("ci"), f"{where}.ci", list, null=True)
        if ci is not None:
            if len(ci) != 2:
                raise self.fail(f"{where}.ci", f"expected 2 numbers, got {len(ci)}")
            for i, x in enumerate(ci):
                self.number(x, f"{where}.ci[{i}]", null=False)
        details = self.kind(v.get("details"), f"{where}.details", dict, null=True) or {}
        for k in CURVE_KEYS:
            if k in details:
                self.curves(details[k], f"{where}.details.{k}")
        return {**v, **out}

    def document(self, data: Any) -> list[dict[str, Any]]:
        data = self.kind(data, "top level", dict)
        runs = self.kind(data.get("runs"), "runs", list)
        out = []
        for i, r in enumerate(runs):
            r = self.kind(r, f"runs[{i}]", dict)
            name = self.text(self.kind(r.get("name"), f"runs[{i}].name", str), f"runs[{i}].name")
            source = self.kind(r.get("source"), f"runs[{i}].source", str, null=True)
            vs = self.kind(r.get("verdicts"), f"runs[{i}].verdicts", list, null=True) or []
            out.append({"name": name, "source": source,
                        "verdicts": [self.verdict(v, f"runs[{i}].verdicts[{j}]") for j, v in enumerate(vs)]})
        return out


def checked_runs(path: str | Path) -> list[dict[str, Any]]:
    """The file's run entries, each checked (strings cut to :data:`MAX_TEXT`), or one error."""
    return _Checker(str(path)).document(load_json(path))
