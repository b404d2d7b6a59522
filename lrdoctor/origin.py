"""What produced a run, when lrdoctor knows: the ``lrdoctor-run.json`` a built-in workload writes
into each run directory (workload name, config, ground-truth labels). The workloads write it,
discovery reads it into ``Run.origin``, verify reruns from it and the report shows its config."""

from __future__ import annotations

#: Name of the file a built-in workload writes into each run directory. Discovery never treats
#: it as a log.
ORIGIN_FILE = "lrdoctor-run.json"
