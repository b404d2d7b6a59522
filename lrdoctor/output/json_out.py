"""The ``--json`` document of ``lrdoctor diagnose``.

Shape (stable; tested)::

    {"runs": [{"name", "source", "format",
               "findings": [{"rule", "severity", "start_step", "end_step", "steps", "message",
                             "evidence", "proposals"}],
               "skipped_rules": [{"rule", "reason"}],
               "annotations": [{"kind", "message", "path", "location"}]}]}

A finding whose proposal planner failed also has ``"proposal_errors": ["kind: Error: message"]``
(the key is absent otherwise). When runs under the path could not be read, the document also has
``"errors": [{"path", "message"}]`` (one per unreadable run; the key is absent otherwise), and
``"left_out": [{"path", "message"}]`` for what was left out without being an error (a run that
logged no metrics beside runs that did, a file named like a log that no reader knows).
``annotations`` are what the reader noticed and kept (non-numeric cells, restarts, repeated
steps, skipped corrupt records); ``path``/``location`` are ``null`` when not known.

Non-finite numbers in evidence (a NaN loss, an infinite ratio) are written as the strings
``"nan"``, ``"inf"`` and ``"-inf"``: the output is always strict JSON (``json.loads`` in any
language accepts it), and the value is kept rather than blurred into ``null``. ``null`` means
"not known" (e.g. a finding with no end step).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..jsonsafe import json_safe
from ..model import Diagnosis


def diagnosis_dict(d: Diagnosis) -> dict[str, Any]:
    return {
        "name": d.run.name,
        "source": d.run.source,
        "format": d.run.format,
        "findings": [f.to_dict() for f in d.findings],
        "skipped_rules": [{"rule": s.rule, "reason": s.reason} for s in d.skipped_rules],
        "annotations": [
            {"kind": a.kind, "message": a.message, "path": a.path, "location": a.location}
            for a in d.run.annotations
        ],
    }


def diagnoses_document(diagnoses: Iterable[Diagnosis], errors: Iterable[Exception] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {"runs": [diagnosis_dict(d) for d in diagnoses]}
    from ..errors import LeftOut

    errors = list(errors)
    failed = [e for e in errors if not isinstance(e, LeftOut)]
    left_out = [e for e in errors if isinstance(e, LeftOut)]
    for key, items in (("errors", failed), ("left_out", left_out)):
        if items:
            doc[key] = [{"path": getattr(e, "path", None), "message": getattr(e, "message", None) or str(e)}
                        for e in items]
    return json_safe(doc)


def dumps(diagnoses: Iterable[Diagnosis], *, errors: Iterable[Exception] = (), indent: int | None = 2) -> str:
    return json.dumps(diagnoses_document(diagnoses, errors), indent=indent, allow_nan=False)
