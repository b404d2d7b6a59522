"""Checkpoints that let ``lrdoctor verify`` fork a rerun from shortly before a finding.

One file per saved step, ``<dir>/step-<N>.pt`` (``DIR_NAME`` under the run's log directory), a
plain ``torch.save`` dict of tensors and primitives only, so that it loads with
``torch.load(..., weights_only=True)`` - a checkpoint found next to a log is untrusted input and
must never run code when read. It holds what makes a resumed run continue exactly where the
original was: model, optimizer and scheduler state, every RNG the loop draws from (torch, numpy,
python, and the workload's poison generator) and the run's config (whose seed fixes the data set
and the batch order, see :class:`~lrdoctor.workloads.data.BatchOrder`).

Retention (:class:`CheckpointKeeper`): the last ``keep`` checkpoints and those of the last
``PROTECT_MARGIN`` + one interval steps, plus every checkpoint from shortly before a step whose loss is non-finite or jumps above ``ANOMALY_RATIO`` x the median of
the last ``ANOMALY_WINDOW`` losses. The keeper cannot run lrdoctor's rules while training, so it
protects on this cheap online test: a late loss spike would otherwise lose the only checkpoints
a rerun can fork from to the "keep the last N" rule by the time the run ends.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DIR_NAME = "lrdoctor-checkpoints"
FORMAT = "lrdoctor-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")
#: the online anomaly test that protects checkpoints from retention (see the module docstring)
ANOMALY_RATIO = 5.0
ANOMALY_WINDOW = 64
#: checkpoints this many steps (plus two save intervals) before an anomaly are kept: enough to fork
#: ``fork_margin_steps`` (100 by default) before it whatever the save interval
PROTECT_MARGIN = 100


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{int(step)}.pt"


def step_of(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def rng_state(generators: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every RNG state as tensors and primitives (``weights_only`` loads them)."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "python": _py_state(random.getstate()),
    }
    for name, gen in (generators or {}).items():
        out[f"gen:{name}"] = gen.get_state()
    return out


def _py_state(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), list(internal), gauss]


def restore_rng(state: dict[str, Any], generators: dict[str, Any] | None = None) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    for name, gen in (generators or {}).items():
        if f"gen:{name}" in state:
            gen.set_state(state[f"gen:{name}"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_payload`, safely (``weights_only=True``)."""
    import torch

    from ..errors import VerifyError

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable/unsafe file is one user-facing error
        raise VerifyError(f"{path}: not a checkpoint lrdoctor can load safely ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise VerifyError(f"{path}: not an lrdoctor checkpoint (no '{FORMAT}' format key)")
    return data


@dataclass
class CheckpointKeeper:
    """Saves every ``every`` steps into ``directory`` and prunes to the last ``keep`` plus the
    protected ones (see the module docstring). ``every <= 0`` saves nothing."""

    directory: Path
    every: int
    keep: int = 3

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._saved: list[int] = []
        self._protected: set[int] = set()
        self._recent: deque[float] = deque(maxlen=ANOMALY_WINDOW)
        if self.every > 0:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        import torch

        path = checkpoint_path(self.directory, step)
        tmp = path.with_suffix(".tmp")
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": int(step), **payload}, tmp)
        tmp.replace(path)  # never a half-written checkpoint under the final name
        self._saved.append(int(step))
        self._prune()
        return path

    def save_if_due(self, step: int, healthy: bool, payload) -> Path | None:
        """Save ``payload()`` at a due step of a run whose loss is still finite (a NaN/inf
        checkpoint is nothing to fork from)."""
        return self.save(step, payload()) if healthy and self.due(step) else None

    def observe(self, step: int, loss: float) -> None:
        """Feed each step's loss; an anomaly protects the checkpoints shortly before it."""
        if not self.enabled:
            return
        anomalous = not math.isfinite(loss)
        if not anomalous and len(self._recent) >= 8:
            anomalous = loss > ANOMALY_RATIO * float(np.median(self._recent))
        if anomalous:
            first = step - PROTECT_MARGIN - 2 * self.every
            new = {s for s in self._saved if s >= first} - self._protected
            if new:
                log.info("loss anomaly at step %d: keeping checkpoints %s", step, sorted(new))
                self._protected |= new
        elif math.isfinite(loss):
            self._recent.append(float(loss))

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        # also the window an anomaly at the next step would protect: with a small keep x every the
        # last N alone may not reach PROTECT_MARGIN steps back
        recent = self._saved[-1] - PROTECT_MARGIN - self.every
        keep = set(self._saved[-self.keep:]) | self._protected | {s for s in self._saved if s >= recent}
        for s in [s for s in self._saved if s not in keep]:
            checkpoint_path(self.directory, s).unlink(missing_ok=True)
            self._saved.remove(s)


def script_payload(model, optimizer, scheduler, seed: int | None) -> dict[str, Any]:
    """What :class:`lrdoctor.Controller` checkpoints for a user's loop (see :func:`resume_script`)."""
    return {"model": model.state_dict() if model is not None else None, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None and hasattr(scheduler, "state_dict")
            else None, "rng": rng_state(), "seed": -1 if seed is None else int(seed)}


def resume_script(path: str | Path, model, optimizer, scheduler, seed: int | None) -> int:
    """Load a :func:`script_payload` checkpoint into a user's model/optimizer/scheduler; returns
    its step. RNG streams are restored when ``seed`` is the checkpointed one (an exact replay),
    else reseeded from (seed, step) so that what follows the fork varies with the paired seed."""
    ckpt = load_checkpoint(path)
    if model is not None and ckpt.get("model") is not None:
        model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    step = int(ckpt["step"])
    if seed is None or int(seed) == int(ckpt.get("seed", -1)):
        restore_rng(ckpt["rng"])
    else:
        reseed(int(seed), step)
    return step


def reseed(seed: int, step: int, generators: dict[str, Any] | None = None) -> None:
    """New RNG streams for a fork at ``step`` under another paired seed (a function of both, so the
    two arms of a pair draw the same ones)."""
    import torch

    mixed = (int(seed) * 1_000_003 + int(step)) % 2**63
    torch.manual_seed(mixed)
    np.random.seed(mixed % 2**32)
    random.seed(mixed)
    for k, gen in enumerate((generators or {}).values()):
        gen.manual_seed(mixed + 7 + k)
