"""Metric roles: which logged tag is the training loss, the validation loss, the grad norm, ...

Rules ask for roles, never for tag names, so one rule works on every framework's logs.
Resolution per role: a ``--role role=tag`` override (or a roles config file) wins; else the first
exact alias (case-insensitive) from :data:`ALIASES` that the run has; else the first tag that
matches the role's fallback pattern. The table is documented in README ("Metric roles").
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import RoleSpecError
from .model import Run, Series, SeriesFamily

log = logging.getLogger(__name__)

ROLES = ("train_loss", "val_loss", "grad_norm", "lr", "val_metric")
#: Roles played by a family of tags (one per layer) rather than one tag: a detector receives them
#: as a :class:`~lrdoctor.model.SeriesFamily`. Found by :data:`FAMILY_PATTERNS` only.
FAMILY_ROLES = ("layer_grad_norm",)

#: Exact aliases, most specific first. Matching is case-insensitive.
ALIASES: dict[str, tuple[str, ...]] = {
    "train_loss": (
        # Per-step series before per-epoch ones, and HF's per-step "loss" before its one-point
        # end-of-training "train_loss" summary.
        "train_loss_step", "train/loss_step", "train/loss", "loss/train", "loss", "train_loss",
        "training_loss", "train loss", "train_loss_epoch", "train/running_loss",
        "mean_loss", "train/train_loss", "losses/train",
        # Keras's TensorBoard callback: logs/train/ + logs/validation/ read as one run.
        "train/epoch_loss", "epoch_loss",
    ),
    "val_loss": (
        "val_loss", "val/loss", "valid_loss", "validation_loss", "loss/val", "loss/validation",
        "eval_loss", "eval/loss", "val_loss_epoch", "test_loss", "validation/loss", "val loss",
        "validation/epoch_loss", "val/epoch_loss", "eval/epoch_loss",
    ),
    "grad_norm": (
        "grad_norm", "train/grad_norm", "grad_2.0_norm_total", "gradient norm", "gradient_norm",
        "grad_norm/total", "train/grad_norm_before_clip", "grad_norm_before_clip", "total_grad_norm",
        "grad-norm", "gradnorm",
    ),
    "lr": (
        "lr", "learning_rate", "train/learning_rate", "train/lr", "learning_rate/group_0",
        "lr-adamw", "lr-adam", "lr-sgd", "lr/group_0", "x/lr0", "learningrate", "lr_0",
    ),
    "val_metric": (
        "val_acc", "val_accuracy", "val/acc", "val/accuracy", "eval_accuracy", "eval/accuracy",
        "accuracy/val", "valid_acc", "val_acc_epoch", "metrics/map_0.5", "eval_f1", "val_f1",
        "validation/epoch_accuracy", "val/epoch_accuracy", "eval/epoch_accuracy",
        "validation/epoch_acc", "val/epoch_acc",
    ),
}


#: Fallback patterns (searched with re.search on the lower-cased tag, tags in logged order).
PATTERNS: dict[str, tuple[str, ...]] = {
    "train_loss": (r"^(?!.*(val|valid|eval|test)).*train.*loss", r"^(?!.*(val|valid|eval|test|lr)).*loss$"),
    "val_loss": (r"(val|valid|validation|eval|test).*loss", r"loss.*(val|valid|validation|eval|test)"),
    "grad_norm": (r"grad.*norm(?!.*after)",),
    "lr": (r"(^|[/_\- ])(lr|learning[_ ]?rate)([/_\-]|$)", r"^lr[\-_/]"),
    "val_metric": (r"(val|valid|eval|test).*(acc|f1|auc|map|bleu|rouge|precision|recall)",),
}


#: Multi-tag roles: patterns (re.fullmatch, case-insensitive) whose ``name`` group is the member's
#: name. Per-layer gradient norms: Lightning's ``grad_norm(module, norm_type)`` utility
#: (``grad_2.0_norm/<param>``, ``grad_inf_norm/<param>``, with its own ``grad_2.0_norm_total``
#: beside them), and the hand-rolled ``grad_norm/<param>``, ``grads/<param>/norm``,
#: ``gradient_norm/<param>`` (a ``train/`` prefix allowed). One family is taken per run: the
#: largest group of tags sharing a prefix, a 2-norm before other norms.
FAMILY_PATTERNS: dict[str, tuple[str, ...]] = {
    "layer_grad_norm": (
        r"(?P<prefix>grad_(?:[0-9.]+|inf)_norm/)(?P<name>.+)",
        r"(?P<prefix>(?:train/)?(?:grad_?norms?|gradient_?norms?)/)(?P<name>.+)",
        r"(?P<prefix>(?:train/)?grads?/)(?P<name>.+?)(?:/|_|\.)norm",
    ),
}
#: Member names that are a summary of the family, not a member (``grad_norm/total`` is the total
#: norm, resolved as the ``grad_norm`` role).
_SUMMARY_NAMES = frozenset({"total", "all", "global", "overall", "sum", "mean", "max", "clipped"})


def family_tags(role: str, tags: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tags, member names) of the family playing ``role``, in logged order; empty when none."""
    groups: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for tag in tags:
        for i, pat in enumerate(FAMILY_PATTERNS[role]):
            m = re.fullmatch(pat, tag.strip(), flags=re.IGNORECASE)
            if m and m["name"].lower() not in _SUMMARY_NAMES:
                groups.setdefault((i, m["prefix"].lower()), []).append((tag, m["name"]))
                break
    if not groups:
        return (), ()
    # the largest group; on a tie the first pattern, a 2-norm (Lightning may log several norms)
    key = min(groups, key=lambda k: (-len(groups[k]), k[0], "2" not in k[1]))
    members = groups[key]
    return tuple(t for t, _ in members), tuple(n for _, n in members)


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def model_order(names: tuple[str, ...]) -> tuple[list[int], str]:
    """Positions of ``names`` in model order, and how it was found ("logged" or "natural").

    A script logs parameters in ``named_parameters()`` order (registration order, which is the
    forward order of a Sequential or a stack of blocks), and most writers keep it; a writer that
    sorts its keys (Lightning's CSVLogger sorts its columns) loses it. When the logged order is
    exactly the sorted one it may be either, so the names are sorted naturally (numbers as
    numbers): right for numbered stacks (``layers.0`` ... ``layers.11``) whatever the writer did,
    alphabetical for named modules when the writer sorted them (then the early/late split can be
    wrong: a TensorBoard log of the same run keeps the true order).
    """
    idx = list(range(len(names)))
    if list(names) != sorted(names):
        return idx, "logged"
    return sorted(idx, key=lambda i: _natural_key(names[i])), "natural"


def build_family(role: str, tags: Iterable[str], series: Callable[[str], Series]) -> SeriesFamily | None:
    """The family playing ``role`` among ``tags`` (``series(tag)`` gives a member's points), in
    model order (:func:`model_order`); None when the run logs none."""
    members, names = family_tags(role, tags)
    if not members:
        return None
    order, how = model_order(names)
    return SeriesFamily(role, tuple(names[i] for i in order), tuple(series(members[i]) for i in order), how)


def parse_role_overrides(items: Iterable[str], *, source: str | None = None) -> dict[str, str]:
    """Parse ``role=tag`` strings (from ``--role``, or from the roles config file ``source``)."""
    out: dict[str, str] = {}
    for item in items:
        role, sep, tag = item.partition("=")
        role = role.strip()
        if not sep or not tag:
            if source:
                raise RoleSpecError(f"expected 'role: tag', got {item!r}", path=source)
            raise RoleSpecError(f"--role expects ROLE=TAG, got {item!r}")
        if role not in ROLES:
            if source:
                raise RoleSpecError(f"unknown role {role!r} (known: {', '.join(ROLES)})", path=source)
            raise RoleSpecError(f"unknown role {role!r} in --role (known: {', '.join(ROLES)})")
        out[role] = tag
    return out


def load_roles_config(path: str | Path) -> dict[str, str]:
    """A YAML file mapping role -> tag (or ``roles: {role: tag}``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or exc
        raise RoleSpecError(f"cannot read roles config: {' '.join(str(what).split())}", path=str(path),
                            location=f"line {mark.line + 1}, column {mark.column + 1}" if mark else None) from exc
    if isinstance(data, dict) and isinstance(data.get("roles"), dict):
        data = data["roles"]
    if not isinstance(data, dict):
        raise RoleSpecError("expected a mapping of role: tag", path=str(path))
    return parse_role_overrides((f"{k}={v}" for k, v in data.items()), source=str(path))


#: Loss families for runs that log no tag with "loss" in its name (``rmse_step``, ``nll``,
#: ``perplexity``), most likely to be the optimised objective first: a likelihood or
#: cross-entropy, then MSE (what regressions minimise; RMSE is its reported square root), RMSE,
#: MAE, and last perplexity (exp of the cross-entropy: a report of the loss, never optimised).
LOSS_FAMILIES: tuple[tuple[str, str], ...] = (
    ("nll", r"(^|[/_\- ])(nll|neg_?log_?likelihood|cross_?entropy|xent)($|[/_\- ])"),
    ("mse", r"(^|[/_\- ])mse($|[/_\- ])"),
    ("rmse", r"(^|[/_\- ])rmse($|[/_\- ])"),
    ("mae", r"(^|[/_\- ])mae($|[/_\- ])"),
    ("perplexity", r"(^|[/_\- ])(perplexity|ppl)($|[/_\- ])"),
)
_HELD_OUT = re.compile(r"(^|[/_\- ])(val|valid|validation|eval|test)")


def _family_tag(tags: list[str], used: set[str], held_out: bool) -> tuple[str, str] | None:
    """The tag of the most likely optimised loss family, per-step series before per-epoch ones."""
    for family, pat in LOSS_FAMILIES:
        rx = re.compile(pat)
        hits = [t for t in tags if t not in used and rx.search(t.lower().strip())
                and bool(_HELD_OUT.search(t.lower())) == held_out]
        if hits:
            hits.sort(key=lambda t: t.lower().endswith("epoch"))  # stable: logged order otherwise
            others = sorted({f for f, p in LOSS_FAMILIES if f != family and any(
                re.search(p, t.lower()) and bool(_HELD_OUT.search(t.lower())) == held_out for t in tags)})
            why = f"no tag named loss; {family} family" + (
                f", preferred over {', '.join(others)} as the likelier optimised objective" if others else "")
            return hits[0], why
    return None


def resolve_roles_explained(tags: Iterable[str], overrides: Mapping[str, str] | None = None, *,
                            run_name: str | None = None) -> dict[str, tuple[str, str]]:
    """Each role -> (tag, why that tag): "--role", "alias", "pattern ..." or "no tag named loss; ...".

    An override whose tag this run lacks (one run of a sweep logs under another name) is not
    applied: a warning names the run and the role is resolved as usual. A train or val loss with
    no alias or pattern match falls back to the loss families (:data:`LOSS_FAMILIES`).
    """
    tags = list(tags)
    lower = {}
    for t in tags:
        lower.setdefault(t.lower().strip(), t)
    out: dict[str, tuple[str, str]] = {}
    used: set[str] = set()
    for role, tag in (overrides or {}).items():
        if tag not in tags:
            log.warning("run %s has no tag %r: --role %s=%s not applied to it, %s resolved as usual",
                        run_name or "?", tag, role, tag, role)
            continue
        out[role] = (tag, "--role override")
        used.add(tag)
    # a layer's grad norm never plays the run's grad_norm (nor any one-tag role), even where no
    # total is logged and the grad_norm pattern would match it
    for family in FAMILY_ROLES:
        used.update(family_tags(family, tags)[0])
    for role in ROLES:
        if role in out:
            continue
        hit = next(((lower[a], "alias") for a in ALIASES[role] if a in lower and lower[a] not in used), None)
        if hit is None:
            for pat in PATTERNS[role]:
                rx = re.compile(pat)
                t = next((t for t in tags if t not in used and rx.search(t.lower().strip())), None)
                if t is not None:
                    hit = (t, f"pattern {pat}")
                    break
        if hit is None and role in ("train_loss", "val_loss"):
            hit = _family_tag(tags, used, held_out=role == "val_loss")
        if hit is not None:
            out[role] = hit
            used.add(hit[0])
    return out


def resolve_roles(tags: Iterable[str], overrides: Mapping[str, str] | None = None, *,
                  run_name: str | None = None) -> dict[str, str]:
    """Map each role to the tag that plays it (roles with no tag are absent); see
    :func:`resolve_roles_explained` for why each tag was chosen."""
    return {r: t for r, (t, _) in resolve_roles_explained(tags, overrides, run_name=run_name).items()}


class TagIndex:
    """Row positions of every tag of a scalar table, from one factorize and one stable sort.

    Built once per run and shared by the rules and the report: a boolean mask per tag over
    millions of rows, repeated for every role and rule, was most of their run time.
    """

    def __init__(self, scalars: pd.DataFrame) -> None:
        codes, uniques = pd.factorize(scalars["tag"], sort=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        self.tags = [str(t) for t in uniques]
        self._rows = {t: order[bounds[i]:bounds[i + 1]] for i, t in enumerate(self.tags)}
        self.steps = scalars["step"].to_numpy(dtype=np.int64)
        self.values = scalars["value"].to_numpy(dtype=np.float64)
        self.wall_time = scalars["wall_time"].to_numpy(dtype=np.float64)

    def rows(self, tag: str) -> np.ndarray:
        """The tag's row positions in logged order (empty when the run has no such tag)."""
        return self._rows.get(tag, np.array([], dtype=np.int64))

    def series(self, tag: str) -> Series:
        """One tag sorted by step (stable: repeated steps keep their logged order)."""
        rows = self.rows(tag)
        steps = self.steps[rows]
        order = np.argsort(steps, kind="stable")
        rows = rows[order]
        return Series(tag=tag, steps=steps[order], values=self.values[rows], wall_time=self.wall_time[rows])


@dataclass(frozen=True)
class RoleView:
    """A run seen through its roles: ``view["train_loss"]`` is a :class:`Series`."""

    run: Run
    roles: dict[str, str]

    @classmethod
    def of(cls, run: Run, overrides: Mapping[str, str] | None = None) -> RoleView:
        return cls(run, resolve_roles(run.tags, overrides, run_name=run.name))

    @functools.cached_property
    def index(self) -> TagIndex:
        return TagIndex(self.run.scalars)

    def has(self, role: str) -> bool:
        return role in self

    def __contains__(self, role: str) -> bool:
        if role in FAMILY_ROLES:
            return self.family(role) is not None
        return role in self.roles

    @functools.cached_property
    def _families(self) -> dict[str, SeriesFamily | None]:
        return {}

    def family(self, role: str) -> SeriesFamily | None:
        """The multi-tag role's members (:func:`build_family`; one point per step each), computed
        once per view; None when the run logs none."""
        cache = self._families
        if role not in cache:
            cache[role] = build_family(role, self.run.tags, lambda t: dedupe_steps(self.index.series(t)))
        return cache[role]

    def __getitem__(self, role: str) -> Series:
        return self.index.series(self.roles[role])

    def get(self, role: str) -> Series | None:
        return self[role] if role in self.roles else None

    @functools.cached_property
    def _one_per_step(self) -> dict[str, Series]:
        return {}

    def deduped(self, role: str) -> Series | None:
        """The role's series with one point per step (:func:`dedupe_steps`), computed once per
        view: what the detectors judge, and what proposals compute their numbers from, so the
        two cannot differ on a resumed run that logged some steps twice."""
        if role not in self.roles:
            return None
        cache = self._one_per_step
        if role not in cache:
            cache[role] = dedupe_steps(self[role])
        return cache[role]


def dedupe_steps(series: Series) -> Series:
    """One point per step, keeping the last logged one: a resumed run re-logs the steps it
    repeats, and the later values are the ones the surviving model produced."""
    steps = np.asarray(series.steps, dtype=np.int64)
    if len(steps) < 2 or bool(np.all(np.diff(steps) > 0)):
        return series
    # steps are sorted stably, so the last of a run of equal steps is the last one logged
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]
    wall = None if series.wall_time is None else np.asarray(series.wall_time)[keep]
    return Series(tag=series.tag, steps=steps[keep], values=np.asarray(series.values)[keep], wall_time=wall)


def series_of(scalars: pd.DataFrame, tag: str) -> Series:
    """One tag of a scalar table as arrays sorted by step (stable: repeats keep logged order)."""
    return TagIndex(scalars).series(tag)
