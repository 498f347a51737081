"""Datetimes to google.protobuf.Timestamp, for the API modules' mapping code."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2


def to_timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
