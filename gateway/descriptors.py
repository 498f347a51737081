"""The descriptor pool the gateway works from: the descriptor set Envoy also gets, plus the
google.rpc error types so that `google.rpc.Status` details print as JSON."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2


@dataclasses.dataclass(frozen=True, slots=True)
class DescriptorSet:
    """A pool built from a FileDescriptorSet, and the names of the files it was given."""

    pool: Any  # google.protobuf.descriptor_pool.DescriptorPool
    file_names: tuple[str, ...]
    # The files as given, with their source info (comments, for gateway/openapi.py).
    files: tuple[Any, ...] = ()

    @classmethod
    def load(cls, path: pathlib.Path) -> DescriptorSet:
        return cls.parse(path.read_bytes())

    @classmethod
    def parse(cls, data: bytes) -> DescriptorSet:
        files = descriptor_pb2.FileDescriptorSet.FromString(data).file
        pool = descriptor_pool.DescriptorPool()
        for file in files:  # --include_imports lists dependencies first
            pool.Add(file)
        for module in (status_pb2, error_details_pb2):
            _add_with_dependencies(pool, module.DESCRIPTOR)
        return cls(pool=pool, file_names=tuple(f.name for f in files), files=tuple(files))


def _add_with_dependencies(pool: Any, file: Any) -> None:
    """Copies a file from the default pool unless the descriptor set already has it."""
    try:
        pool.FindFileByName(file.name)
        return
    except KeyError:
        pass
    for dependency in file.dependencies:
        _add_with_dependencies(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
