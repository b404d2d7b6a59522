"""Rule files: load, validate, override.

A rule is one YAML file (see ``rules/*.yaml`` and ``lrdoctor rules explain NAME``). Built-in rules
ship inside the package (``lrdoctor/_rules``, a link to the top-level ``rules/`` folder); users add
directories with ``--rules DIR``. A user rule with the name of a built-in one replaces it.
Every problem is a :class:`RuleSpecError` naming the file, e.g.
``rules/plateau.yaml: unknown parameter 'windw' for detector 'plateau' (did you mean 'window'?)``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import RuleSpecError
from ..model import Severity
from ..roles import FAMILY_ROLES, ROLES
from .livespec import LivePolicy, parse_live
from .registry import detector_info

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("name", "code", "title", "severity", "requires", "detector", "message", "doc")
OPTIONAL_KEYS = ("optional", "proposals", "proposal_policy", "superseded_by", "symptom", "unstable_in_sweep", "markers",
                 "live", "judged", "raises_lr")
#: How a rule judges its symptom (see RuleSpec.judged).
JUDGED = ("event", "onset", "trend")
DOC_KEYS = ("what", "why", "example", "fix")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_CODE = re.compile(r"^[A-Z]{2,}[0-9]{3,}$")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
#: How a finding's marked steps are drawn: plain markers, or labelled with their values plus the
#: curve's latest point (a rise from a best value, such as overfitting, is the finding itself).
MARKER_STYLES = ("points", "best-and-latest")


@dataclass(frozen=True)
class RuleSpec:
    name: str
    code: str
    title: str
    severity: Severity
    requires: tuple[str, ...]
    optional: tuple[str, ...]
    kind: str  # detector kind
    params: dict[str, Any] = field(hash=False)  # full set: detector defaults + the file's values
    message: str = ""
    proposals: tuple[str, ...] = ()
    doc: dict[str, str] = field(default_factory=dict, hash=False)
    #: when one of these rules fires on the same run, this one is dropped (e.g. a plateau that
    #: is the stall of vanished gradients)
    superseded_by: tuple[str, ...] = ()
    path: str = ""
    #: how the live engine confirms this rule's findings on a run still being written
    live: LivePolicy = field(default_factory=LivePolicy, hash=False)
    #: the role whose curve shows the symptom: the report marks the finding on it, verify keeps
    #: its rerun curves, and a rule with one counts as a symptom when a healthy run is rechecked
    symptom: str | None = None
    #: a run with this finding trained unstably (an LR sweep's stable range leaves its LR out)
    unstable_in_sweep: bool = False
    markers: str = "points"  # one of MARKER_STYLES
    #: how the rule judges its symptom, for verify's fork from a checkpoint: "event" (at a step),
    #: "onset" (lasts once set in) or "trend" (over the whole curve: reruns start at step 0)
    judged: str = "trend"
    #: the symptom may be cured by a higher LR (a plateau): verify's LR ladder may climb upwards
    raises_lr: bool = False
    #: how the run's evidence ranks the proposal kinds (a name in lrdoctor.proposals.policy);
    #: None: in the order ``proposals`` lists them
    proposal_policy: str | None = None


def _display(path: Path) -> str:
    """Built-in rules are shown as ``rules/NAME.yaml`` (where they live in the source tree)."""
    return f"rules/{path.name}" if path.parent.name == "_rules" else str(path)


def suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(value: Any) -> float | None:
    """A YAML/--set value as a float: numbers, and the strings PyYAML leaves unparsed
    ('5e-2', '1e9', 'inf', '-inf' -- YAML 1.1 wants '5.0e-2' and '.inf')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_param_type(default: Any, value: Any, allowed: str | None = None) -> Any:
    """``value`` coerced to the type of ``default`` and checked against its declared range
    (``allowed``: a key of lrdoctor.detectors.base.RANGES), or ValueError."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(default, (int, float)):
        num = _number(value)
        if num is None or num != num:
            raise ValueError(f"expected {'an integer' if isinstance(default, int) else 'a number'}, got {value!r}")
        if isinstance(default, int):
            if abs(num) == float("inf") or not num.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            out: Any = int(num)
        else:
            out = num
        if allowed is not None:
            from ..detectors.base import in_range, range_text

            if not in_range(out, allowed):
                raise ValueError(f"must be {range_text(allowed)}, got {value!r}")
        return out
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _str_list(data: Mapping, key: str, where: str) -> tuple[str, ...]:
    raw = data.get(key, [])
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RuleSpecError(f"{key!r} must be a list of strings", path=where)
    return tuple(raw)


def _header(data: Mapping, where: str) -> tuple[str, str, Severity, tuple[str, ...], tuple[str, ...]]:
    """Keys known and present; name, code, severity and roles checked."""
    for key in data:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise RuleSpecError(f"unknown key {key!r}{suggest(key, REQUIRED_KEYS + OPTIONAL_KEYS)}", path=where)
    for key in REQUIRED_KEYS:
        if key not in data:
            raise RuleSpecError(f"missing key {key!r}", path=where)
    name, code = data["name"], data["code"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleSpecError(f"name {name!r} must be a lower-case slug like 'loss-spike'", path=where)
    if not isinstance(code, str) or not _CODE.match(code):
        raise RuleSpecError(f"code {code!r} must look like 'LRD001'", path=where)
    for key in ("title", "message"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise RuleSpecError(f"{key!r} must be a non-empty string", path=where)
    try:
        severity = Severity(str(data["severity"]).lower())
    except ValueError:
        raise RuleSpecError(f"severity {data['severity']!r} must be error, warning or info", path=where) from None
    requires = _str_list(data, "requires", where)
    optional = _str_list(data, "optional", where)
    known = ROLES + FAMILY_ROLES
    for role in requires + optional:
        if role not in known:
            raise RuleSpecError(f"unknown role {role!r}{suggest(role, known)} (roles: {', '.join(known)})", path=where)
    return name, code, severity, requires, optional


def _detector(det: Any, requires: tuple[str, ...], optional: tuple[str, ...], where: str) -> tuple[str, dict]:
    """The detector kind and its full parameter set (defaults + the file's values, checked)."""
    if not isinstance(det, dict) or "kind" not in det:
        raise RuleSpecError("'detector' must be a mapping with 'kind' (and optional 'params')", path=where)
    for key in det:
        if key not in ("kind", "params"):
            raise RuleSpecError(f"unknown key 'detector.{key}'", path=where)
    kind = det["kind"]
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise RuleSpecError(f"detector kind {kind!r} must be a name like 'loss_spike'", path=where)
    try:
        info = detector_info(kind)
    except RuleSpecError as exc:
        raise RuleSpecError(exc.message, path=where) from None
    given = det.get("params") or {}
    if not isinstance(given, dict):
        raise RuleSpecError("'detector.params' must be a mapping", path=where)
    params = dict(info.params)
    for key, value in given.items():
        if key not in info.params:
            raise RuleSpecError(
                f"unknown parameter {key!r} for detector {kind!r}{suggest(key, info.params)}", path=where
            )
        try:
            params[key] = check_param_type(info.params[key], value, info.ranges.get(key))
        except ValueError as exc:
            raise RuleSpecError(f"parameter {key!r}: {exc}", path=where) from None
    for role in info.required_roles:
        if role not in requires:
            raise RuleSpecError(f"detector {kind!r} needs role {role!r}: add it to 'requires'", path=where)
    for role in requires + optional:
        if role not in info.roles:
            raise RuleSpecError(f"detector {kind!r} does not take role {role!r}", path=where)
    return kind, params


def _doc(doc: Any, where: str) -> dict[str, str]:
    if not isinstance(doc, dict):
        raise RuleSpecError("'doc' must be a mapping with what/why/example/fix", path=where)
    for key in DOC_KEYS:
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise RuleSpecError(f"'doc.{key}' must be a non-empty string", path=where)
    for key in doc:
        if key not in DOC_KEYS:
            raise RuleSpecError(f"unknown key 'doc.{key}'{suggest(key, DOC_KEYS)}", path=where)
    return {k: str(doc[k]).strip() for k in DOC_KEYS}


def _declared(data: Mapping, where: str) -> dict[str, Any]:
    """What the file declares for the later stages: symptom role, sweep instability, marker
    style, proposal kinds and their ranking policy."""
    symptom = data.get("symptom")
    if symptom is not None and symptom not in ROLES:
        raise RuleSpecError(f"symptom {symptom!r} must be a role{suggest(str(symptom), ROLES)} "
                            f"(roles: {', '.join(ROLES)})", path=where)
    unstable = data.get("unstable_in_sweep", False)
    if not isinstance(unstable, bool):
        raise RuleSpecError("'unstable_in_sweep' must be true or false", path=where)
    markers = data.get("markers", "points")
    if markers not in MARKER_STYLES:
        raise RuleSpecError(f"markers {markers!r} must be one of {', '.join(MARKER_STYLES)}", path=where)
    policy = data.get("proposal_policy")
    if policy is not None and (not isinstance(policy, str) or not _NAME.match(policy)):
        raise RuleSpecError(f"proposal_policy {policy!r} must be a name like 'blow-up'", path=where)
    proposals = _str_list(data, "proposals", where)
    for kind_name in proposals:
        if not _KIND.match(kind_name):
            raise RuleSpecError(f"proposal kind {kind_name!r} must be a name like 'clip_grad_norm'", path=where)
    judged = data.get("judged", "trend")
    if judged not in JUDGED:
        raise RuleSpecError(f"judged {judged!r} must be one of {', '.join(JUDGED)}", path=where)
    raises_lr = data.get("raises_lr", False)
    if not isinstance(raises_lr, bool):
        raise RuleSpecError("'raises_lr' must be true or false", path=where)
    return {"symptom": symptom, "unstable_in_sweep": unstable, "markers": markers, "proposal_policy": policy,
            "proposals": proposals, "judged": judged, "raises_lr": raises_lr}


def parse_rule(data: Any, where: str) -> RuleSpec:
    """Validate one rule's parsed YAML."""
    if not isinstance(data, dict):
        raise RuleSpecError("a rule file must be a mapping", path=where)
    name, code, severity, requires, optional = _header(data, where)
    kind, params = _detector(data["detector"], requires, optional, where)
    return RuleSpec(
        name=name,
        code=code,
        title=data["title"].strip(),
        severity=severity,
        requires=requires,
        optional=optional,
        kind=kind,
        params=params,
        message=data["message"].strip(),
        doc=_doc(data["doc"], where),
        superseded_by=_str_list(data, "superseded_by", where),
        path=where,
        live=parse_live(data.get("live"), where),
        **_declared(data, where),
    )


def load_rule_file(path: Path) -> RuleSpec:
    import yaml

    where = _display(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleSpecError(f"cannot read rule file: {exc.strerror}", path=where) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"line {mark.line + 1}" if mark is not None else None
        raise RuleSpecError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=where, location=loc) from exc
    return parse_rule(data, where)


def builtin_rules_dir() -> Path:
    return Path(str(importlib.resources.files("lrdoctor") / "_rules"))


def _rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_rules(dirs: Iterable[str | Path] = (), *, builtin: bool = True) -> list[RuleSpec]:
    """Built-in rules, then every ``*.yaml`` in ``dirs`` (later names replace earlier ones)."""
    sources: list[Path] = []
    if builtin:
        sources.extend(_rule_files(builtin_rules_dir()))
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise RuleSpecError("--rules expects a directory of rule YAML files", path=str(d))
        sources.extend(_rule_files(d))
    by_name: dict[str, RuleSpec] = {}
    for path in sources:
        rule = load_rule_file(path)
        if rule.name in by_name:
            # a warning, not info: replacing a built-in silently hides its defaults and docs
            old = by_name[rule.name]
            builtin_note = "the built-in " if old.path.startswith("rules/") and builtin else ""
            log.warning("%s replaces %srule %r from %s", rule.path, builtin_note, rule.name, old.path)
        by_name[rule.name] = rule
    codes: dict[str, str] = {}
    for rule in by_name.values():
        if rule.code in codes:
            raise RuleSpecError(f"code {rule.code} is also used by rule {codes[rule.code]!r}", path=rule.path)
        codes[rule.code] = rule.name
    return sorted(by_name.values(), key=lambda r: r.code)


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``rule.param=value`` strings (``--set``) -> {rule: {param: value}}; values parsed as YAML."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        lhs, sep, raw = item.partition("=")
        rule, dot, param = lhs.strip().rpartition(".")
        if not sep or not dot or not rule or not param or not raw.strip():
            raise RuleSpecError(f"--set expects RULE.PARAM=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out.setdefault(rule, {})[param] = value
    return out


def apply_overrides(rules: Iterable[RuleSpec], overrides: Mapping[str, Mapping[str, Any]] | None) -> list[RuleSpec]:
    """Rules with ``--set`` values applied, each checked against the detector's parameter types."""
    rules = list(rules)
    if not overrides:
        return rules
    names = {r.name for r in rules}
    for rule_name in overrides:
        if rule_name not in names:
            raise RuleSpecError(f"--set: unknown rule {rule_name!r}{suggest(rule_name, names)}")
    out = []
    for rule in rules:
        changes = overrides.get(rule.name)
        if not changes:
            out.append(rule)
            continue
        params = dict(rule.params)
        for key, value in changes.items():
            if key not in params:
                raise RuleSpecError(
                    f"--set {rule.name}.{key}: unknown parameter {key!r}{suggest(key, params)} "
                    f"(parameters: {', '.join(params)})"
                )
            try:
                params[key] = check_param_type(params[key], value, detector_info(rule.kind).ranges.get(key))
            except ValueError as exc:
                raise RuleSpecError(f"--set {rule.name}.{key}: {exc} (rule {rule.name} from {rule.path})") from None
        out.append(replace(rule, params=params))
    return out


def select_rules(rules: Iterable[RuleSpec], select: Iterable[str] = (), ignore: Iterable[str] = ()) -> list[RuleSpec]:
    """Keep the rules named (by name or code) in ``select`` (all when empty), minus ``ignore``."""
    rules = list(rules)
    known = {r.name for r in rules} | {r.code for r in rules}
    for item in list(select) + list(ignore):
        if item not in known:
            raise RuleSpecError(f"unknown rule {item!r}{suggest(item, known)} in --select/--ignore")
    sel, ign = set(select), set(ignore)
    return [
        r for r in rules
        if (not sel or r.name in sel or r.code in sel) and r.name not in ign and r.code not in ign
    ]
