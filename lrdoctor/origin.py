"""What produced a run, when lrdoctor knows: the ``lrdoctor-run.json`` a built-in workload writes
into each run directory (workload name, config, ground-truth labels). The workloads write it,
discovery reads it into ``Run.origin``, verify reruns from it and the report shows its config."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .frozen import FrozenJSON

#: Name of the file a built-in workload writes into each run directory. Discovery never treats
#: it as a log.
ORIGIN_FILE = "lrdoctor-run.json"


@dataclass(frozen=True, eq=False)
class RunOrigin(FrozenJSON):
    """``lrdoctor-run.json``, parsed once (:meth:`parse`): the whole document reads like the dict
    it was (``origin["labels"]``), and what lrdoctor uses is typed here."""

    @classmethod
    def parse(cls, data: Any) -> RunOrigin:
        """The document as a RunOrigin; ValueError (one line) when it is not an object or its
        ``config`` is not one."""
        if isinstance(data, RunOrigin):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("config") is not None and not isinstance(data["config"], Mapping):
            raise ValueError(f"'config' must be an object, got {type(data['config']).__name__}")
        return cls(tuple((str(k), copy.deepcopy(v)) for k, v in data.items()))

    @property
    def workload(self) -> str | None:
        """The built-in workload that wrote the run (None: not one of lrdoctor's workloads)."""
        w = self.get("workload")
        return str(w) if w else None

    @property
    def config(self) -> dict[str, Any] | None:
        """The workload's config (a fresh copy), None when the file has none."""
        return self.get("config")

    @property
    def format(self) -> str | None:
        """The log format the workload wrote."""
        f = self.get("format")
        return str(f) if f else None
