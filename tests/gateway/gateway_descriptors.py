"""A tiny hand-built proto file for testing what the Pixelshop protos do not use: `**`,
`{var=path/*}`, dotted variables, additional_bindings, server streaming, every scalar kind."""

from __future__ import annotations

from typing import Any

# Imported for their side effect: the default pool must hold the tiny file's dependencies
# (and the google.api.http extension, for text_format to read the options).
from google.api import annotations_pb2, httpbody_pb2  # noqa: F401
from google.protobuf import (  # noqa: F401
    descriptor_pb2,
    descriptor_pool,
    field_mask_pb2,
    text_format,
    timestamp_pb2,
    wrappers_pb2,
)

from gateway.descriptors import DescriptorSet

PACKAGE = "pixelshop.shelf.v1"
SERVICE = f"{PACKAGE}.ShelfService"

_FILE = """
name: "pixelshop/shelf/v1/shelf.proto"
package: "pixelshop.shelf.v1"
syntax: "proto3"
dependency: "google/api/annotations.proto"
dependency: "google/api/httpbody.proto"
dependency: "google/protobuf/field_mask.proto"
dependency: "google/protobuf/timestamp.proto"
dependency: "google/protobuf/wrappers.proto"
enum_type {
  name: "Genre"
  value { name: "GENRE_UNSPECIFIED" number: 0 }
  value { name: "GENRE_NOVEL" number: 1 }
  value { name: "GENRE_POEM" number: 2 }
}
message_type {
  name: "Author"
  field { name: "name" number: 1 type: TYPE_STRING json_name: "name" }
  field { name: "born_year" number: 2 type: TYPE_INT64 json_name: "bornYear" }
}
message_type {
  name: "Book"
  field { name: "name" number: 1 type: TYPE_STRING json_name: "name" }
  field { name: "author" number: 2 type: TYPE_MESSAGE type_name: ".pixelshop.shelf.v1.Author"
    json_name: "author" }
  field { name: "tags" number: 3 type: TYPE_STRING label: LABEL_REPEATED json_name: "tags" }
  field { name: "genre" number: 4 type: TYPE_ENUM type_name: ".pixelshop.shelf.v1.Genre"
    json_name: "genre" }
  field { name: "draft" number: 5 type: TYPE_BOOL json_name: "draft" }
  field { name: "page_count" number: 6 type: TYPE_INT64 json_name: "pageCount" }
  field { name: "update_mask" number: 7 type: TYPE_MESSAGE type_name: ".google.protobuf.FieldMask"
    json_name: "updateMask" }
  field { name: "publish_time" number: 8 type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp"
    json_name: "publishTime" }
  field { name: "rating" number: 9 type: TYPE_MESSAGE type_name: ".google.protobuf.Int32Value"
    json_name: "rating" }
  field { name: "labels" number: 10 type: TYPE_MESSAGE label: LABEL_REPEATED
    type_name: ".pixelshop.shelf.v1.Book.LabelsEntry" json_name: "labels" }
  field { name: "price" number: 11 type: TYPE_DOUBLE json_name: "price" }
  field { name: "cover" number: 12 type: TYPE_BYTES json_name: "cover" }
  field { name: "shelf" number: 13 type: TYPE_STRING json_name: "shelf" }
  field { name: "related" number: 14 type: TYPE_MESSAGE label: LABEL_REPEATED
    type_name: ".pixelshop.shelf.v1.Author" json_name: "related" }
  field { name: "scan" number: 15 type: TYPE_MESSAGE type_name: ".google.api.HttpBody"
    json_name: "scan" }
  nested_type {
    name: "LabelsEntry"
    field { name: "key" number: 1 type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 type: TYPE_STRING json_name: "value" }
    options { map_entry: true }
  }
}
service {
  name: "ShelfService"
  method {
    name: "GetBook" input_type: ".pixelshop.shelf.v1.Book" output_type: ".pixelshop.shelf.v1.Book"
    options {
      [google.api.http] {
        get: "/v1/{name=shelves/*/books/*}"
        additional_bindings { get: "/v1/books/{name}" }
        additional_bindings { post: "/v1/books/{name}:fetch" body: "*" }
        additional_bindings { get: "/v1/authors/{author.name}/books/{name}" }
        additional_bindings { get: "/v1/files/{shelf=**}" }
      }
    }
  }
  method {
    name: "UpdateBook" input_type: ".pixelshop.shelf.v1.Book"
      output_type: ".pixelshop.shelf.v1.Book"
    options {
      [google.api.http] {
        put: "/v1/books/{name}" body: "*"
        additional_bindings { custom { kind: "PURGE" path: "/v1/books/{name}" } }
      }
    }
  }
  method {
    name: "GetSpecialBook" input_type: ".pixelshop.shelf.v1.Book"
      output_type: ".pixelshop.shelf.v1.Book"
    options { [google.api.http] { get: "/v1/books/special" } }
  }
  method {
    name: "ListBooks" input_type: ".pixelshop.shelf.v1.Book" output_type: ".pixelshop.shelf.v1.Book"
    server_streaming: true
    options { [google.api.http] { get: "/v1/{shelf=shelves/*}/books" } }
  }
  method {
    name: "ReadScans" input_type: ".pixelshop.shelf.v1.Book" output_type: ".google.api.HttpBody"
    server_streaming: true
    options { [google.api.http] { get: "/v1/books/{name}:scans" } }
  }
  method {
    name: "AddBooks" input_type: ".pixelshop.shelf.v1.Book" output_type: ".pixelshop.shelf.v1.Book"
    client_streaming: true
    options { [google.api.http] { post: "/v1/books:batchAdd" body: "*" } }
  }
  method {
    name: "GetAuthorName" input_type: ".pixelshop.shelf.v1.Book"
      output_type: ".pixelshop.shelf.v1.Book"
    options { [google.api.http] { get: "/v1/books/{name}/author" response_body: "author" } }
  }
}
"""


def shelf_file() -> Any:
    """The tiny file as a FileDescriptorProto (google.api.http options included)."""
    return text_format.Parse(_FILE, descriptor_pb2.FileDescriptorProto())


def descriptor_set_bytes(file: Any | None = None) -> bytes:
    """A FileDescriptorSet like `protoc --include_imports` writes: dependencies first."""
    file = file or shelf_file()
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
        for dependency in proto.dependency:
            add(dependency)
        out.file.append(proto)

    for dependency in file.dependency:
        add(dependency)
    out.file.append(file)
    return out.SerializeToString()


def shelf_descriptors() -> DescriptorSet:
    return DescriptorSet.parse(descriptor_set_bytes())


def shelf_method(descriptors: DescriptorSet, name: str) -> Any:
    return descriptors.pool.FindMethodByName(f"{SERVICE}.{name}")
