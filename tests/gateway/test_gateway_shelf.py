"""End to end over the tiny `ShelfService` (gateway_descriptors.py), for what the Pixelshop
protos do not use: server streaming, PUT and custom methods, additional_bindings, `**`, dotted
variables, response_body, literal-over-wildcard, and a client-streaming method left unrouted."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from gateway_descriptors import SERVICE, descriptor_set_bytes, shelf_descriptors
from gateway_harness import run_gateway
from google.protobuf import message_factory

from gateway.settings import GatewaySettings

POOL = shelf_descriptors().pool
Book = message_factory.GetMessageClass(POOL.FindMessageTypeByName("pixelshop.shelf.v1.Book"))
HttpBody = message_factory.GetMessageClass(POOL.FindMessageTypeByName("google.api.HttpBody"))


async def _echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
    return request


async def _special(request: Any, context: grpc.aio.ServicerContext) -> Any:
    return Book(name="special")


async def _author(request: Any, context: grpc.aio.ServicerContext) -> Any:
    book = Book(name=request.name)
    book.author.name = "Ann"
    book.author.born_year = 1900
    return book


async def _list_books(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    count = 0 if request.name == "none" else 3
    for index in range(count):
        if index == 2 and request.name == "fail":
            await context.abort(grpc.StatusCode.DATA_LOSS, "shelf collapsed")
        yield Book(name=f"{request.shelf}/books/{index}", page_count=index)


async def _read_scans(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    yield HttpBody(content_type="image/png", data=b"part-1;")
    yield HttpBody(data=b"part-2")


def _unary(behavior: Any, response_class: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=Book.FromString,
        response_serializer=response_class.SerializeToString,
    )


def _stream(behavior: Any, response_class: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_stream_rpc_method_handler(
        behavior,
        request_deserializer=Book.FromString,
        response_serializer=response_class.SerializeToString,
    )


@pytest.fixture(scope="module")
async def shelf_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    descriptor_set = pathlib.Path(tmp_path_factory.mktemp("shelf")) / "shelf.binpb"
    descriptor_set.write_bytes(descriptor_set_bytes())
    server = grpc.aio.server()
    handlers = {
        "GetBook": _unary(_echo, Book),
        "UpdateBook": _unary(_echo, Book),
        "GetSpecialBook": _unary(_special, Book),
        "GetAuthorName": _unary(_author, Book),
        "ListBooks": _stream(_list_books, Book),
        "ReadScans": _stream(_read_scans, HttpBody),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = GatewaySettings(
        port=0, descriptor_set=descriptor_set, upstreams={"shelf": f"127.0.0.1:{port}"}
    )
    try:
        async with run_gateway(settings) as client:
            yield client
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("method", "url", "json", "expected"),
    [
        (
            "GET",
            "/v1/shelves/s1/books/b1?draft=true",
            None,
            {"name": "shelves/s1/books/b1", "draft": True},
        ),
        (
            "GET",
            "/v1/books/b1?tags=a&tags=b&genre=2",
            None,
            {"name": "b1", "tags": ["a", "b"], "genre": "GENRE_POEM"},
        ),
        ("POST", "/v1/books/b1:fetch", {"pageCount": 7}, {"name": "b1", "pageCount": "7"}),
        ("GET", "/v1/authors/ann/books/b1", None, {"name": "b1", "author": {"name": "ann"}}),
        ("GET", "/v1/files/a/b%20c/d", None, {"shelf": "a/b c/d"}),
        (
            "PUT",
            "/v1/books/b1",
            {"rating": 4, "updateMask": "rating"},
            {"name": "b1", "rating": 4, "updateMask": "rating"},
        ),
        ("PURGE", "/v1/books/b1", None, {"name": "b1"}),
        ("GET", "/v1/books/special", None, {"name": "special"}),
        ("GET", "/v1/books/b1/author", None, {"name": "Ann", "bornYear": "1900"}),
    ],
    ids=[
        "var-path",
        "additional-binding",
        "custom-verb-body",
        "dotted",
        "double-star",
        "put",
        "custom-method",
        "literal",
        "response-body",
    ],
)
async def test_shelf_routes(
    shelf_client: httpx.AsyncClient, method: str, url: str, json: Any, expected: Any
) -> None:
    response = await shelf_client.request(method, url, json=json)

    assert response.status_code == 200, response.text
    assert response.json() == expected


async def test_server_streaming_answers_a_json_array(shelf_client: httpx.AsyncClient) -> None:
    response = await shelf_client.get("/v1/shelves/s1/books")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {"name": "shelves/s1/books/0"},
        {"name": "shelves/s1/books/1", "pageCount": "1"},
        {"name": "shelves/s1/books/2", "pageCount": "2"},
    ]


async def test_an_empty_stream_is_an_empty_array(shelf_client: httpx.AsyncClient) -> None:
    response = await shelf_client.get("/v1/shelves/s1/books?name=none")

    assert (response.status_code, response.json()) == (200, [])


async def test_a_stream_failing_midway_is_an_error(shelf_client: httpx.AsyncClient) -> None:
    response = await shelf_client.get("/v1/shelves/s1/books?name=fail")

    assert response.status_code == 500
    assert response.json() == {
        "code": grpc.StatusCode.DATA_LOSS.value[0],
        "message": "shelf collapsed",
    }


async def test_a_stream_of_http_bodies_is_their_bytes(shelf_client: httpx.AsyncClient) -> None:
    response = await shelf_client.get("/v1/books/b1:scans")

    assert response.status_code == 200
    assert response.content == b"part-1;part-2"
    assert response.headers["content-type"] == "image/png"


async def test_client_streaming_methods_are_not_routed(shelf_client: httpx.AsyncClient) -> None:
    response = await shelf_client.post("/v1/books:batchAdd", json={"name": "b"})

    assert response.status_code == 404
