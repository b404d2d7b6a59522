"""A read-only mapping over parsed JSON: the shared base of the types that replace dicts crossing
stage borders (:class:`lrdoctor.patch.ConfigPatch`, :class:`lrdoctor.origin.RunOrigin`).

It reads like the dict it was parsed from (``x["key"]``, ``"key" in x``, ``x == {...}``), so JSON
shapes and callers that index it stay as they were, but it cannot be changed after it is built:
nested values come out as copies. :meth:`FrozenJSON.to_dict` is the JSON form.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class FrozenJSON(Mapping[str, Any]):
    items_: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, key: str) -> Any:
        for k, v in self.items_:
            if k == key:
                return copy.deepcopy(v)  # nested dicts/lists: a copy, so the value stays as built
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __hash__(self) -> int:
        return hash(repr(self.items_))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a fresh dict, keys in the order they were given)."""
        return {k: copy.deepcopy(v) for k, v in self.items_}
