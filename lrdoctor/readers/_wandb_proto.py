"""The part of wandb's ``Record`` protobuf that lrdoctor reads, declared here at runtime.

Field numbers are those of ``wandb/proto/wandb_internal.proto`` (stable across wandb versions:
protobuf fields are never renumbered). Declaring only these fields keeps lrdoctor free of the
wandb package while parsing still runs in protobuf's C implementation (upb), which is what
keeps the records read whole (run, config) and the odd item off the fast path cheap; every other
field is skipped unread. History and summary items are walked in bulk (:mod:`._pbwalk`).
Strings are declared ``bytes`` so a damaged key never fails a whole record on UTF-8 checks.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SPEC = {
    # message: [(field name, number, type, label, message type name)]
    "Record": [("history", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "HistoryRecord"),
               ("summary", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ItemsRecord"),
               ("config", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ItemsRecord"),
               ("run", 17, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "RunRecord")],
    "HistoryRecord": [("item", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Item"),
                      ("step", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "HistoryStep")],
    "HistoryStep": [("num", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None)],
    # HistoryItem, ConfigItem and SummaryItem share these three fields.
    "Item": [("key", 1, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
             ("nested_key", 2, _F.TYPE_BYTES, _F.LABEL_REPEATED, None),
             ("value_json", 16, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None)],
    # ConfigRecord and SummaryRecord: update (1) and remove (2) lists.
    "ItemsRecord": [("update", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Item"),
                    ("remove", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Item")],
    "RunRecord": [("run_id", 1, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                  ("project", 3, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                  ("config", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ItemsRecord"),
                  ("summary", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ItemsRecord"),
                  ("display_name", 8, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                  ("starting_step", 14, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
                  ("resumed", 18, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None)],
}
_PACKAGE = "lrdoctor_wandb"


def _build():
    fd = descriptor_pb2.FileDescriptorProto(name="lrdoctor_wandb_subset.proto", package=_PACKAGE,
                                            syntax="proto3")
    for msg, fields in _SPEC.items():
        m = fd.message_type.add(name=msg)
        for name, number, ftype, label, type_name in fields:
            f = m.field.add(name=name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Record")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Item")))


#: A record (the few read whole: run and config records) and one history/summary/config item.
Record, Item = _build()
