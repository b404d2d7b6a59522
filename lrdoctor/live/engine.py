"""The rule engine fed point by point: the same rules, on everything logged so far.

A live check runs the offline rules (same YAML, same detectors) on the run's prefix, so the
answer the live engine ends with on a finished log *is* ``diagnose``'s answer; what streaming
adds is *when* each finding is first seen, and the events between checks:

* ``new``: a rule fires that had not fired;
* ``updated``: a finding that had fired grew (another spike, a new onset, a worse severity);
  it is reported again as an update, never as a second finding;
* ``withdrawn``: a finding of an earlier check no longer holds on more data (an overfitting
  whose validation loss came back down, a loss spike that turned out to be the start of a
  divergence, which supersedes it). Each rule's ``live`` note (``lrdoctor rules explain``) says
  which of its findings can be withdrawn and what it reports before the evidence is complete.

Points are kept in growing numpy buffers (amortised O(1) per point); a check costs what the
detectors cost on the prefix. Proposals are computed only for new and updated findings, on a real
:class:`~lrdoctor.model.Run` built from the buffers then.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..averaging import tag_says_averaged
from ..model import Finding, Run, Series, SeriesFamily, Severity, make_scalars
from ..origin import RunOrigin
from ..roles import FAMILY_ROLES, RoleView, build_family, dedupe_steps, family_tags, resolve_roles

log = logging.getLogger(__name__)

#: a whole-run rule is run again once the run has grown by this factor (8 times per doubling,
#: the span its live policy waits for before confirming)
RECHECK_GROWTH = 2 ** (1 / 8)


class EventKind(str, enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class LiveEvent:
    """A change in what the rules find on a run being written."""

    kind: EventKind
    run: str
    finding: Finding
    #: the last step the engine had seen when it noticed (the finding's onset is ``finding.start_step``)
    at_step: int

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind.value, "run": self.run, "at_step": self.at_step, **self.finding.to_dict()}


class _Buffer:
    """One tag's points in arrays that double when full (no per-check concatenation).

    Points fed one at a time wait in two Python lists until the arrays are read: a training
    feeds every step and checks every few, and a list append costs a fraction of writing one
    element into a numpy array (the feeding is most of what a training pays between checks).
    Whether the steps so far are ascending, and strictly so, is kept up to date as points come
    in, so that a check does not test the whole prefix again for a sort or a de-duplication.
    """

    __slots__ = ("_last", "_n", "_pending_steps", "_pending_values", "_sorted", "_steps", "_strict", "_values")

    def __init__(self, capacity: int = 256) -> None:
        self._n = 0
        self._steps = np.empty(capacity, dtype=np.int64)
        self._values = np.empty(capacity, dtype=np.float64)
        self._pending_steps: list[int] = []
        self._pending_values: list[float] = []
        self._sorted = self._strict = True
        self._last: int | None = None  # the last step fed

    @property
    def n(self) -> int:
        return self._n + len(self._pending_steps)

    @property
    def strict(self) -> bool:
        """Whether the steps fed so far strictly ascend (one point per step, in order)."""
        return self._strict

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * len(self._steps))
        self._steps = np.resize(self._steps, cap)
        self._values = np.resize(self._values, cap)

    def append(self, step: int, value: float) -> None:
        last = self._last
        if last is not None and step <= last:
            self._strict = False
            self._sorted = self._sorted and step == last
        self._last = step
        self._pending_steps.append(step)
        self._pending_values.append(value)

    def extend(self, steps: np.ndarray, values: np.ndarray) -> None:
        self._flush()
        if len(steps) == 0:
            return
        d = np.diff(steps if self._last is None else np.concatenate(([self._last], steps)))
        self._sorted = self._sorted and bool(np.all(d >= 0))
        self._strict = self._strict and bool(np.all(d > 0))
        self._last = int(steps[-1])
        self._store(steps, values)

    def _store(self, steps: Any, values: Any) -> None:
        k = len(steps)
        if self._n + k > len(self._steps):
            self._grow(self._n + k)
        self._steps[self._n:self._n + k] = steps
        self._values[self._n:self._n + k] = values
        self._n += k

    def _flush(self) -> None:
        if self._pending_steps:
            self._store(self._pending_steps, self._pending_values)
            self._pending_steps.clear()
            self._pending_values.clear()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every point's step and value, in the order fed (views of the buffers: do not keep)."""
        self._flush()
        return self._steps[:self._n], self._values[:self._n]

    def values_since(self, k: int) -> list[float]:
        """The values of the points fed after the first ``k``, as a list (no numpy call when
        they have not been stored yet: what a screen is fed at each check)."""
        if k >= self._n:
            return self._pending_values[k - self._n:]
        return self._values[k:self._n].tolist() + self._pending_values

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the points where ``mask`` (over :meth:`arrays`) is True (into new arrays:
        a Series handed out earlier is a view of the old ones and must not change)."""
        steps, values = self.arrays()
        idx = np.flatnonzero(mask)
        self._steps, self._values = np.resize(steps[idx], max(len(idx), 1)), np.resize(values[idx], max(len(idx), 1))
        self._n = len(idx)
        d = np.diff(self._steps[:self._n])
        self._sorted, self._strict = bool(np.all(d >= 0)), bool(np.all(d > 0))
        self._last = int(self._steps[self._n - 1]) if self._n else None

    def series(self, tag: str, *, one_per_step: bool = False) -> Series:
        """The points as a Series, steps ascending (stable: a resumed run logs steps again);
        ``one_per_step``: as :func:`lrdoctor.roles.dedupe_steps` (the last point of each step).
        Strictly ascending steps, what a training feeds, are handed out as they are: views of
        the buffers, which only ever grow past them (appending never rewrites stored points)."""
        steps, values = self.arrays()
        if self._strict:
            return Series(tag=tag, steps=steps, values=values)
        if not self._sorted:
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
        out = Series(tag=tag, steps=steps.copy(), values=values.copy())
        return dedupe_steps(out) if one_per_step else out


class _PrefixView:
    """What the rule runner needs of a RoleView, served from the buffers (no pandas per check).

    ``families``: the members of each multi-tag role, found when the tags last changed (a
    regex per tag, not worth repeating every check)."""

    def __init__(self, run: Run, roles: dict[str, str], buffers: Mapping[str, _Buffer],
                 families: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None) -> None:
        self.run = run
        self.roles = roles
        self._buffers = buffers
        self._families = families if families is not None else _families(buffers)

    def __contains__(self, role: str) -> bool:
        if role in FAMILY_ROLES:
            return bool(self._families[role][0])
        return role in self.roles

    def __getitem__(self, role: str) -> Series:
        tag = self.roles[role]
        return self._buffers[tag].series(tag)

    def deduped(self, role: str) -> Series | None:
        """One point per step, as :meth:`lrdoctor.roles.RoleView.deduped` (the runner's cache keeps it)."""
        if role not in self.roles:
            return None
        tag = self.roles[role]
        return self._buffers[tag].series(tag, one_per_step=True)

    def family(self, role: str) -> SeriesFamily | None:
        """A multi-tag role's members, as :meth:`lrdoctor.roles.RoleView.family`."""
        members, _ = self._families[role]
        if not members:
            return None
        return build_family(role, members, lambda t: self._buffers[t].series(t, one_per_step=True))


@dataclass
class _State:
    """One rule's standing on the prefix: seen since ``seen_n`` points, reported (confirmed) or not,
    absent since ``absent_n`` points."""

    seen_n: int
    reported: Finding | None = None
    absent_n: int | None = None


@dataclass
class _Screened:
    """A rule's screen and what it has been fed: ``fed[tag]`` points of each watched tag."""

    factory: Any
    params: dict[str, Any]
    screen: Any = None
    tags: dict[str, str] = field(default_factory=dict)
    fed: dict[str, int] = field(default_factory=dict)


def _families(tags: Iterable[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each multi-tag role's (member tags, names) among ``tags``."""
    return {role: family_tags(role, tags) for role in FAMILY_ROLES}


def _screen_factory(kind: str) -> Any:
    from ..engine.registry import get_detector

    try:
        return getattr(get_detector(kind), "__lrdoctor_screen__", None)
    except Exception:  # noqa: BLE001 -- an unknown kind: run_rule reports it
        return None


def _held(policy: Any, since: int, now: int) -> bool:
    return now - since >= policy.confirm_points and now >= policy.confirm_growth * since


def _signature(f: Finding) -> tuple:
    """What makes a finding 'grown' rather than the same: a new onset, more incidents, a worse severity."""
    return (f.start_step, len(f.steps), f.severity.rank)


@dataclass
class LiveEngine:
    """Feed points with :meth:`add` (or :meth:`extend`), then :meth:`check` for events.

    ``rules`` default to the built-in ones (with ``overrides`` as ``--set`` values); roles are
    resolved from the tags seen so far, as offline (``role_overrides`` as ``--role``).
    """

    name: str = "live"
    source: str = ""
    rules: Sequence[Any] | None = None
    overrides: Mapping[str, Mapping[str, Any]] | None = None
    role_overrides: Mapping[str, str] | None = None
    step_axis: str = "step"
    hparams: dict[str, Any] = field(default_factory=dict)
    #: the run's lrdoctor-run.json (a built-in workload's config): offline, rules read facts such
    #: as steps_per_epoch from it, so the live engine must have it too to give the same answers
    origin: RunOrigin | None = None
    proposals: bool = True
    last_step: int = field(default=-1, init=False)

    def __post_init__(self) -> None:
        from ..engine.spec import apply_overrides, load_rules

        rules = list(self.rules) if self.rules is not None else load_rules()
        self._rules = apply_overrides(rules, self.overrides)
        self._buffers: dict[str, _Buffer] = {}
        self._roles: dict[str, str] = {}
        self._roles_stale = True
        self._families: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._screens: dict[str, _Screened | None] = {}
        self._state: dict[str, _State] = {}
        self._last: dict[str, tuple[int, Finding | None]] = {}  # per rule: points, answer at its last run
        self._run = Run(name=self.name, source=self.source, format="live", hparams=self.hparams,
                        step_axis=self.step_axis, origin=self.origin)
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the rules once on a made-up curve, so the imports and first-call costs of the
        detectors (scipy) and proposals are paid here rather than in the first check of a training."""
        from ..engine.runner import run_rules

        steps = np.arange(1, 65)
        curve = np.exp(-steps / 20.0) + 0.01 * np.cos(steps)
        buffers = {tag: _Buffer() for tag in ("train_loss", "val_loss", "grad_norm", "lr")}
        for tag, buf in buffers.items():
            buf.extend(steps, curve if tag != "lr" else np.full(len(steps), 0.1))
        view = _PrefixView(self._run, {t: t for t in buffers}, buffers)
        try:
            run_rules(view, self._rules)  # type: ignore[arg-type]
            if self.proposals:
                from ..engine.diagnose import _proposer

                _proposer()
        except Exception as exc:  # noqa: BLE001 -- a warm-up only; the real checks report problems
            log.debug("live engine warm-up: %s", exc)

    # ------------------------------------------------------------------ feeding

    def _buffer(self, tag: str) -> _Buffer:
        buf = self._buffers.get(tag)
        if buf is None:
            buf = self._buffers[tag] = _Buffer()
            self._roles_stale = True
        return buf

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        """Points logged at one step, by tag (``{"train_loss": 2.3, "lr": 1e-3}``)."""
        step = int(step)
        for tag, value in metrics.items():
            self._buffer(tag).append(step, float(value))
        if step > self.last_step:
            self.last_step = step

    def extend(self, tag: str, steps: np.ndarray, values: np.ndarray) -> None:
        """Many points of one tag at once (what a reader returned for an appended chunk)."""
        if len(steps) == 0:
            return
        self._buffer(tag).extend(np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))
        self.last_step = max(self.last_step, int(np.max(steps)))

    def restate(self) -> None:
        """Forget every point: the follower hands the run out again on another step axis (a W&B
        run whose step key changed as rows arrived). The findings already reported are kept, so
        the next check, on the points fed again, says only what changed (updated, withdrawn)."""
        self._buffers.clear()
        self._roles_stale = True
        self._screens.clear()
        self._last.clear()
        self._state = {r: _State(seen_n=0, reported=st.reported) for r, st in self._state.items()
                       if st.reported is not None}
        self.last_step = -1

    def truncate(self, last_step: int) -> None:
        """Forget the points after ``last_step`` and every finding (a rollback restored the model of
        that step: what came after is not this training's history any more)."""
        for buf in self._buffers.values():
            buf.keep(buf.arrays()[0] <= last_step)
        self._state.clear()
        self._last.clear()
        self._screens.clear()
        self.last_step = min(self.last_step, int(last_step))

    @property
    def roles(self) -> dict[str, str]:
        if self._roles_stale:
            self._roles = resolve_roles(list(self._buffers), self.role_overrides, run_name=self.name)
            self._families = _families(self._buffers)
            self._roles_stale = False
        return self._roles

    def _view(self) -> _PrefixView:
        roles = self.roles
        return _PrefixView(self._run, roles, self._buffers, self._families)

    @property
    def n_points(self) -> int:
        return sum(b.n for b in self._buffers.values())

    # ------------------------------------------------------------------ checking

    def findings(self, superseders: set[str] | None = None, *, final: bool = True) -> list[Finding]:
        """The rules' findings on everything fed so far (without proposals).

        Offline, a finding is dropped when a rule it is ``superseded_by`` fires; live, only
        when that rule's finding is among ``superseders`` (confirmed ones): a provisional
        divergence must not hide a loss spike it may turn out not to be. ``None``: as offline.

        With ``final=False`` a rule is run again only when its data changed enough to change its
        answer (see :meth:`_due`); otherwise its last answer stands.
        """
        from ..engine.runner import _SeriesCache, run_rule

        view = cache = None  # built when a rule is run, not for a check every screen answers
        found = []
        for rule in self._rules:
            n = self._points(rule)
            if final or self._due(rule, n):
                if not final and self._quiet(rule):
                    out = None  # the rule's screen proves its detector finds nothing
                else:
                    if cache is None:
                        view = self._view()
                        cache = _SeriesCache(view)  # type: ignore[arg-type]
                    out = run_rule(rule, view, cache)  # type: ignore[arg-type]
                self._last[rule.name] = (n, out if isinstance(out, Finding) else None)
            f = self._last[rule.name][1]
            if f is not None:
                found.append(f)
        fired = {f.rule for f in found} if superseders is None else superseders & {f.rule for f in found}
        by_name = {r.name: r for r in self._rules}
        return [f for f in found if not (set(by_name[f.rule].superseded_by) & fired)]

    def _quiet(self, rule: Any) -> bool:
        """Whether the rule's screen (:mod:`lrdoctor.detectors.screens`), fed the points logged
        since the last check, proves that its detector finds nothing on the prefix. False when
        the detector has no screen, or a watched series is not one point per step in order, or
        is an epoch mean (a screen judges per-step values)."""
        if rule.name not in self._screens:  # looked up once per rule; None: its detector has none
            from ..engine.registry import detector_info

            factory = _screen_factory(rule.kind)
            self._screens[rule.name] = None if factory is None else _Screened(
                factory, {**detector_info(rule.kind).params, **rule.params})
        st = self._screens[rule.name]
        if st is None:
            return False
        roles = self.roles
        tags = {role: roles[role] for role in st.factory.roles if role in roles}
        if st.screen is None or tags != st.tags:  # new, or the roles moved to other tags: from the start
            st.screen, st.tags, st.fed = st.factory(st.params), tags, dict.fromkeys(tags.values(), 0)
        for role, tag in tags.items():
            buf = self._buffers[tag]
            if not buf.strict or tag_says_averaged(tag, self.step_axis):
                return False
            if buf.n > st.fed[tag]:
                st.screen.feed(role, buf.values_since(st.fed[tag]))
                st.fed[tag] = buf.n
        return st.screen.quiet({})

    def _due(self, rule: Any, n: int) -> bool:
        """Whether a check must run ``rule`` again: its first required role has new points, and
        for a whole-run rule (``confirm_growth`` > 1: "never moved") the run grew by RECHECK_GROWTH
        since it was last run -- its answer is about the run's shape, which a few more points do
        not change, and its detectors are the costliest (the stall tests take many medians)."""
        last = self._last.get(rule.name)
        if last is None:
            return True
        if n == last[0]:
            return False
        return rule.live.confirm_growth <= 1.0 or n >= last[0] * RECHECK_GROWTH

    def check(self, *, final: bool = False) -> list[LiveEvent]:
        """Run the rules on the prefix and return what changed since the last check.

        A raw finding becomes an event only once its rule's live policy confirms it (see
        :mod:`lrdoctor.engine.livespec`); ``final=True`` (the log is complete) confirms, and
        withdraws, at once, so the findings then held are exactly ``diagnose``'s.
        """
        confirmed = None if final else {r for r, st in self._state.items() if st.reported is not None}
        raw = {f.rule: f for f in self.findings(confirmed, final=final)}
        events: list[tuple[EventKind, Finding]] = []
        for rule in self._rules:
            f, st = raw.get(rule.name), self._state.get(rule.name)
            n = self._points(rule)
            if f is not None:
                if st is None:
                    st = self._state[rule.name] = _State(seen_n=n)
                st.absent_n = None
                if st.reported is None:
                    if final or rule.live.final_at_once(f.evidence) or _held(rule.live, st.seen_n, n):
                        st.reported = f
                        events.append((EventKind.NEW, f))
                elif _signature(f) != _signature(st.reported):
                    st.reported = f
                    events.append((EventKind.UPDATED, f))
                else:
                    st.reported = _keep_proposals(f, st.reported)
            elif st is not None:
                if st.reported is None:
                    del self._state[rule.name]  # a provisional finding the new points undid: never reported
                    continue
                if st.absent_n is None:
                    st.absent_n = n
                if final or _held(rule.live, st.absent_n, n):
                    events.append((EventKind.WITHDRAWN, st.reported))
                    del self._state[rule.name]
        fresh = [f for k, f in events if k is not EventKind.WITHDRAWN]
        if fresh and self.proposals:
            proposed = self._propose(fresh)
            events = [(k, proposed.get(f.rule, f) if k is not EventKind.WITHDRAWN else f) for k, f in events]
            for k, f in events:
                if k is not EventKind.WITHDRAWN:
                    self._state[f.rule].reported = f
        return [LiveEvent(k, self.name, f, self.last_step) for k, f in events]

    def finish(self) -> list[LiveEvent]:
        """The log is complete: the last check, after which the held findings are ``diagnose``'s."""
        return self.check(final=True)

    @property
    def current(self) -> dict[str, Finding]:
        """The confirmed findings held now, by rule."""
        return {r: st.reported for r, st in self._state.items() if st.reported is not None}

    @property
    def provisional(self) -> dict[str, bool]:
        """Rules whose finding on the prefix is not confirmed yet."""
        return {r: True for r, st in self._state.items() if st.reported is None}

    def _points(self, rule: Any) -> int:
        tag = self.roles.get(rule.requires[0]) if rule.requires else None
        buf = self._buffers.get(tag) if tag is not None else None
        return buf.n if buf is not None else 0

    def snapshot(self) -> Run:
        """Everything fed so far as a Run (tidy table), e.g. for proposals or a report."""
        tags, steps, values = [], [], []
        for tag, buf in self._buffers.items():
            s, v = buf.arrays()
            tags.append(np.full(len(s), tag, dtype=object))
            steps.append(s)
            values.append(v)
        if not tags:
            return self._run
        from dataclasses import replace

        return replace(self._run, scalars=make_scalars(np.concatenate(tags), np.concatenate(steps), None,
                                                       np.concatenate(values)))

    def _propose(self, findings: list[Finding]) -> dict[str, Finding]:
        from dataclasses import replace

        from ..engine.diagnose import _proposer

        out = {f.rule: f for f in findings}
        proposer = _proposer()
        if proposer is None:
            return out
        view = RoleView(self.snapshot(), dict(self.roles))
        by_name = {r.name: r for r in self._rules}
        for f in findings:
            try:
                proposals, errors = proposer(f, view, by_name.get(f.rule))
                out[f.rule] = replace(f, proposals=tuple(proposals), proposal_errors=tuple(errors))
            except Exception as exc:  # noqa: BLE001 -- proposals are an extra; the finding stands alone
                log.debug("proposals for %s failed: %s", f.rule, exc, exc_info=True)
        return out


def _keep_proposals(new: Finding, old: Finding) -> Finding:
    """An unchanged finding keeps the proposals computed when it was new (not recomputed per check)."""
    if new.proposals or not old.proposals:
        return new
    from dataclasses import replace

    return replace(new, proposals=old.proposals)


def at_least(severity: Severity | str, threshold: Severity | str) -> bool:
    return Severity(severity).rank >= Severity(threshold).rank


def rules_reaching(rules: Sequence[Any], threshold: Severity | str) -> list[Any]:
    """The rules whose findings can reach ``threshold``, and the rules that supersede them.

    A detector may lower its finding's severity below its rule's, never raise it, so a rule whose
    own severity is below ``threshold`` cannot give a finding a guard acts on: a guard that acts
    at ``error`` need not run the warning and info rules while the training runs (they are most
    of a check's cost). The rules that supersede a kept one are kept too, so it is dropped exactly
    when it would be with every rule. Order is kept.
    """
    by_name = {r.name: r for r in rules}
    keep = {r.name for r in rules if at_least(r.severity, threshold)}
    todo = list(keep)
    while todo:  # superseders of superseders
        for name in by_name[todo.pop()].superseded_by:
            if name in by_name and name not in keep:
                keep.add(name)
                todo.append(name)
    return [r for r in rules if r.name in keep]
