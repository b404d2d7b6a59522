"""Stop a rerun of the user's command once its training loss has stayed NaN/inf.

A built-in workload and a script using :class:`lrdoctor.Controller` stop themselves at the first
non-finite loss of a verify rerun (it decides the outcome: divergence). A plain script run through
``--train "python train.py ... {max_steps}"`` does not: it trains on to its budget on NaN weights,
and a baseline that reproduces a divergence halfway spends the other half for nothing. While the
command runs, :class:`NonfiniteWatch` follows the rerun's log directory with ``lrdoctor watch``'s
follower (only what was appended since the last poll) and says when the train loss has been
non-finite at its last ``points`` logged points; the harness then stops the command. A run of
that many NaN/inf losses does not come back: a mixed-precision scaler skips steps whose
*gradients* overflow, with a finite loss, and a script that skips a batch whose loss is NaN
logs a few such batches, not 25 in a row (a diverged network logs NaN at every step); the
divergence rule's own test of a persistent non-finite series asks for fewer
(:func:`lrdoctor.detectors.nonfinite.persistent_nonfinite`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..live.follow import TreeFollower
from ..roles import resolve_roles

log = logging.getLogger(__name__)

#: consecutive non-finite train-loss points after which a rerun is stopped
NONFINITE_POINTS = 25
#: seconds between polls of a running rerun's logs
POLL_S = 1.0


class NonfiniteWatch:
    def __init__(self, logdir: str | Path, points: int = NONFINITE_POINTS) -> None:
        self.points = points
        self._tree = TreeFollower(Path(logdir))
        self._tags: dict[int, set[str]] = {}  # tags seen, by follower
        self._bad: dict[int, int] = {}  # trailing non-finite train-loss points, by follower

    def poll(self) -> str | None:
        """Read what the rerun appended; why it is to be stopped, or None."""
        try:
            polled = self._tree.poll()
        except Exception as exc:  # noqa: BLE001 -- a log the watch cannot read yet: read back afterwards
            log.debug("following %s: %s", self._tree.path, exc)
            return None
        for follower, new in polled:
            key = id(follower)
            tags = self._tags.setdefault(key, set())
            tags.update(new["tag"].unique().tolist())
            loss = resolve_roles(sorted(tags)).get("train_loss")
            if loss is None:
                continue
            rows = new[new["tag"] == loss].sort_values("step", kind="stable")
            bad = 0 if follower.restated else self._bad.get(key, 0)
            for ok in np.isfinite(rows["value"].to_numpy(dtype=np.float64)).tolist():
                bad = 0 if ok else bad + 1
            self._bad[key] = bad
            if bad >= self.points:
                step = int(rows["step"].iloc[-1])
                return (f"the train loss ({loss}) was NaN/inf at its last {bad} logged points (to step {step}): "
                        "stopped, the rest of its budget cannot change the outcome")
        return None
