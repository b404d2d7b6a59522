"""Detector kinds by name: the built-in ones plus third-party ones from an entry point.

A third-party package registers a detector in its pyproject.toml::

    [project.entry-points."lrdoctor.detectors"]
    lr_oscillation = "mypkg.detectors:lr_oscillation"

and a rule file names it with ``detector: {kind: lr_oscillation, params: {...}}``. A detector is
a plain function: role series as positional-or-keyword arguments named after their roles
(``train_loss``, ``val_loss``, ``grad_norm``, ``lr``, ``val_metric``; optional ones default to
None; the multi-tag ``layer_grad_norm`` arrives as a :class:`lrdoctor.model.SeriesFamily`), tuning parameters keyword-only with defaults; it returns an
:class:`lrdoctor.detectors.base.Evidence` or None.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from ..errors import RuleSpecError
from ..roles import FAMILY_ROLES, ROLES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lrdoctor.detectors"

#: Built-in detector kinds -> "module:function" (imported on first use).
BUILTIN: dict[str, str] = {
    "divergence": "lrdoctor.detectors.divergence:divergence",
    "loss_spike": "lrdoctor.detectors.spikes:loss_spike",
    "gradient_bursts": "lrdoctor.detectors.spikes:gradient_bursts",
    "plateau": "lrdoctor.detectors.stall:plateau",
    "vanishing_gradients": "lrdoctor.detectors.stall:vanishing_gradients",
    "overfitting": "lrdoctor.detectors.generalization:overfitting",
    "lr_jump": "lrdoctor.detectors.schedule:lr_jump",
}


@dataclass(frozen=True)
class DetectorInfo:
    kind: str
    target: str  # "module:function"
    roles: tuple[str, ...]  # every role the function accepts
    required_roles: tuple[str, ...]  # roles without a default
    params: dict[str, Any]  # keyword-only parameter -> default
    #: parameter -> allowed range (a key of lrdoctor.detectors.base.RANGES), declared with
    #: @param_ranges next to the defaults; parameters without one are only type-checked
    ranges: dict[str, str] = field(default_factory=dict)


def _import(target: str) -> Callable:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.lru_cache(maxsize=1)
def _third_party() -> dict[str, str]:
    out: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            log.warning("entry point %s=%s ignored: %r is a built-in detector", ep.name, ep.value, ep.name)
            continue
        out[ep.name] = ep.value
    return out


def refresh() -> None:
    """Forget cached entry points and signatures (after installing a plugin at runtime)."""
    _third_party.cache_clear()
    detector_info.cache_clear()
    get_detector.cache_clear()


def kinds() -> dict[str, str]:
    """Every known detector kind -> its "module:function" target."""
    return {**BUILTIN, **_third_party()}


@functools.cache
def get_detector(kind: str) -> Callable:
    target = kinds().get(kind)
    if target is None:
        raise RuleSpecError(f"unknown detector kind {kind!r} (known: {', '.join(sorted(kinds()))})")
    try:
        return _import(target)
    except (ImportError, AttributeError) as exc:
        raise RuleSpecError(f"detector kind {kind!r}: cannot import {target}: {exc}") from exc


@functools.cache
def detector_info(kind: str) -> DetectorInfo:
    fn = get_detector(kind)
    roles: list[str] = []
    required: list[str] = []
    params: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.name not in ROLES + FAMILY_ROLES:
                raise RuleSpecError(
                    f"detector kind {kind!r}: argument {p.name!r} is not a role ({', '.join(ROLES + FAMILY_ROLES)}); "
                    "tuning parameters must be keyword-only"
                )
            roles.append(p.name)
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
        elif p.kind is p.KEYWORD_ONLY:
            if p.default is inspect.Parameter.empty:
                raise RuleSpecError(f"detector kind {kind!r}: parameter {p.name!r} needs a default")
            params[p.name] = p.default
    from ..detectors.base import RANGES

    ranges = dict(getattr(fn, "__lrdoctor_ranges__", {}))
    for name, form in ranges.items():
        if name not in params or form not in RANGES:
            raise RuleSpecError(f"detector kind {kind!r}: bad range {form!r} for parameter {name!r}")
    return DetectorInfo(kind, kinds()[kind], tuple(roles), tuple(required), params, ranges)
