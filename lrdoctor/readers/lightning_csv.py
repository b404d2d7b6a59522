"""PyTorch Lightning CSVLogger: ``lightning_logs/version_N/metrics.csv`` + ``hparams.yaml``.

Lightning writes one row per ``log_metrics`` call with the sorted union of all keys as header;
a row holds either step-level or epoch-level values and leaves the other cells empty. ``step`` is
the global step; ``epoch`` is attached to every row and kept as a tag like any other metric.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .csv_dialect import header_of
from .csvfile import read_wide_csv
from .tabular import one_line

log = logging.getLogger(__name__)

HPARAMS_FILE = "hparams.yaml"


class LightningCSVReader:
    name = "lightning_csv"
    description = "PyTorch Lightning CSVLogger (version_N/metrics.csv + hparams.yaml)"

    def sniff(self, path: Path, head: bytes) -> bool:
        names = header_of(head, path)
        if not names or "step" not in names:
            return False
        lightning_named = path.name == "metrics.csv" or (path.parent / HPARAMS_FILE).is_file()
        # Lightning >= 1.x sorts the header; "epoch" is attached to every logged row.
        return "epoch" in names and (lightning_named or names == sorted(names))

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        table, notes, _ = read_wide_csv(path, strict=options.strict, step_names=("step",))
        hparams, more = read_hparams(path.parent / HPARAMS_FILE)
        return Run(name=source.name, source=str(path), format=self.name, scalars=table,
                   hparams=hparams, step_axis="step", annotations=tuple(notes + more))


def read_hparams(path: Path) -> tuple[dict[str, Any], list[Annotation]]:
    """hparams.yaml as a dict; Python-specific YAML tags (Namespace, enums) are read as plain data."""
    if not path.is_file():
        return {}, []
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)
    _Loader.add_multi_constructor("!", _plain)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, [Annotation("bad_hparams", f"cannot read hparams: {one_line(exc)}", path=str(path))]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [Annotation("bad_hparams", "hparams file is not a mapping", path=str(path))]
    return data, []
