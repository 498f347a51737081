"""The route compiler and the transcoder, unit-tested with hand-built google.api.HttpRule
messages and the tiny `Book` message (tests/gateway/gateway_descriptors.py)."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_descriptors import shelf_descriptors, shelf_method
from google.api import http_pb2
from google.protobuf import json_format

from gateway.descriptors import DescriptorSet
from gateway.path_template import PathTemplate, TemplateError, TemplateVariable
from gateway.routes import RouteError, RouteTable, compile_routes, upstream_of
from gateway.settings import DEFAULT_DESCRIPTOR_SET
from gateway.transcoder import (
    BodyMode,
    RequestTranscoder,
    ResponseTranscoder,
    RuleError,
    TranscodeError,
)

DESCRIPTORS = shelf_descriptors()
BOOK = shelf_method(DESCRIPTORS, "GetBook").input_type


def rule(**pattern: Any) -> Any:
    return http_pb2.HttpRule(**pattern)


def table(*rules: Any) -> RouteTable:
    method = shelf_method(DESCRIPTORS, "GetBook")
    return RouteTable(r for each in rules for r in compile_routes(method, each, DESCRIPTORS.pool))


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# --- path templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "segments", "verb", "variables"),
    [
        ("/", (), "", ()),
        ("/v1/books", ("v1", "books"), "", ()),
        ("/v1/books/{name}", ("v1", "books", "*"), "", (TemplateVariable(("name",), 2, 3, False),)),
        ("/v1/auth:signUp", ("v1", "auth"), "signUp", ()),
        (
            "/v1/{name=books/*}:undo",
            ("v1", "books", "*"),
            "undo",
            (TemplateVariable(("name",), 1, 3, True),),
        ),
        ("/v1/{name=**}", ("v1", "**"), "", (TemplateVariable(("name",), 1, 2, True),)),
        ("/v1/*/x/**", ("v1", "*", "x", "**"), "", ()),
        (
            "/v1/{a.b.c}/{d}",
            ("v1", "*", "*"),
            "",
            (TemplateVariable(("a", "b", "c"), 1, 2, False), TemplateVariable(("d",), 2, 3, False)),
        ),
        (
            "/v1/{path=**}/meta",
            ("v1", "**", "meta"),
            "",
            (TemplateVariable(("path",), 1, 2, True),),
        ),
        ("/v1/{name=a:b}", ("v1", "a:b"), "", (TemplateVariable(("name",), 1, 2, False),)),
        ("/.well-known/jwks.json", (".well-known", "jwks.json"), "", ()),
    ],
)
def test_templates_parse(
    source: str, segments: tuple[str, ...], verb: str, variables: tuple[TemplateVariable, ...]
) -> None:
    template = PathTemplate.parse(source)

    assert (template.segments, template.verb, template.variables) == (segments, verb, variables)


@pytest.mark.parametrize(
    "source",
    [
        "v1/books",
        "/v1//books",
        "/v1/books/",
        "/v1/{name",
        "/v1/{1name}",
        "/v1/{name}/{name}",
        "/v1/**/**",
        "/v1/**/*",
        "/v1/books:",
        "/v1/b*ks",
        "/v1/{name=a/{b}}",
    ],
)
def test_bad_templates_are_rejected(source: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.parse(source)


# --- matching ---------------------------------------------------------------------------------

MATCHING = table(
    rule(get="/v1/{name=shelves/*/books/*}"),
    rule(get="/v1/books/special"),
    rule(get="/v1/books/{name}"),
    rule(get="/v1/books/{name}/x"),
    rule(post="/v1/books/{name}:publish", body="*"),
    rule(get="/v1/{name=files/**}"),
    rule(get="/v2/{name=**}/meta"),
    rule(get="/v1/shelves/*/count"),
    rule(custom=http_pb2.CustomHttpPattern(kind="HEAD", path="/v1/books/{name}")),
    rule(get="/v1/authors/{author.name}/books/{name}"),
)


@pytest.mark.parametrize(
    ("method", "path", "template", "variables"),
    [
        (
            "GET",
            "/v1/shelves/s1/books/b1",
            "/v1/{name=shelves/*/books/*}",
            ("shelves/s1/books/b1",),
        ),
        # Several segments: reserved characters stay escaped, others are decoded.
        (
            "GET",
            "/v1/shelves/s%2F1/books/b%201",
            "/v1/{name=shelves/*/books/*}",
            ("shelves/s%2F1/books/b 1",),
        ),
        # One segment: fully decoded.
        ("GET", "/v1/books/a%2Fb%3Ac", "/v1/books/{name}", ("a/b:c",)),
        ("GET", "/v1/books/special", "/v1/books/special", ()),  # literal wins over {name}
        ("GET", "/v1/books/other", "/v1/books/{name}", ("other",)),
        ("GET", "/v1/books/special/x", "/v1/books/{name}/x", ("special",)),  # backtracking
        ("POST", "/v1/books/b1:publish", "/v1/books/{name}:publish", ("b1",)),
        ("GET", "/v1/books/b1:draft", "/v1/books/{name}", ("b1:draft",)),  # not a declared verb
        ("GET", "/v1/files/a/b/c.txt", "/v1/{name=files/**}", ("files/a/b/c.txt",)),
        ("GET", "/v1/files", "/v1/{name=files/**}", ("files",)),  # ** matches no segment
        ("GET", "/v2/a/b/meta", "/v2/{name=**}/meta", ("a/b",)),
        ("GET", "/v1/shelves/s1/count", "/v1/shelves/*/count", ()),
        ("HEAD", "/v1/books/b1", "/v1/books/{name}", ("b1",)),
        (
            "GET",
            "/v1/authors/ann/books/b1",
            "/v1/authors/{author.name}/books/{name}",
            ("ann", "b1"),
        ),
        ("GET", "/v1/books/b1/", "/v1/books/{name}", ("b1",)),  # trailing slash dropped
    ],
)
def test_paths_match_like_envoy(
    method: str, path: str, template: str, variables: tuple[str, ...]
) -> None:
    match = MATCHING.match(method, path)

    assert match is not None
    assert (match.route.template.source, match.variables) == (template, variables)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/books/b1"),  # no binding for the method
        ("GET", "/v1/books/b1:publish"),  # the verb is declared for POST only
        ("GET", "/v1/books"),
        ("GET", "/v2/meta"),
        ("GET", "/v1/shelves/s1/books"),
        ("GET", "v1/books/b1"),
        ("GET", ""),
    ],
)
def test_paths_that_match_nothing(method: str, path: str) -> None:
    assert MATCHING.match(method, path) is None


def test_a_variable_that_is_not_utf8_is_a_client_error() -> None:
    with pytest.raises(TranscodeError):
        MATCHING.match("GET", "/v1/books/%FF")


def test_additional_bindings_route_to_the_same_method() -> None:
    routes = compile_routes(
        shelf_method(DESCRIPTORS, "GetBook"),
        rule(
            get="/v1/books/{name}",
            additional_bindings=[
                rule(post="/v1/books/{name}:get", body="*"),
                rule(get="/v1/b/{name}"),
            ],
        ),
        DESCRIPTORS.pool,
    )

    assert [(r.http_method, r.template.source) for r in routes] == [
        ("GET", "/v1/books/{name}"),
        ("POST", "/v1/books/{name}:get"),
        ("GET", "/v1/b/{name}"),
    ]
    assert {r.method.grpc_path for r in routes} == {"/pixelshop.shelf.v1.ShelfService/GetBook"}
    assert routes[0].method.upstream == "shelf"


@pytest.mark.parametrize(
    ("bad_rule", "message"),
    [
        (rule(get="/v1/{nope}"), "not a field"),
        (rule(get="/v1/{author}"), "cannot be set from text"),
        (rule(get="/v1/{related.name}"), "repeated"),
        (rule(post="/v1/books", body="nope"), "not a field"),
        (rule(get="/v1/books", response_body="nope"), "not a field"),
        (rule(get="/v1/{name"), "unclosed"),
        (rule(body="*"), "without a pattern"),
        (
            rule(
                get="/v1/a",
                additional_bindings=[rule(get="/v1/b", additional_bindings=[rule(get="/v1/c")])],
            ),
            "nest",
        ),
    ],
)
def test_rules_that_cannot_be_routed_fail_at_start_up(bad_rule: Any, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        table(bad_rule)


def test_the_same_binding_twice_fails_at_start_up() -> None:
    with pytest.raises(RouteError, match="bound to both"):
        table(rule(get="/v1/books/{name}"), rule(get="/v1/books/{shelf}"))


@pytest.mark.parametrize(
    ("package", "upstream"),
    [("pixelshop.identity.v1", "identity"), ("pixelshop.presets.v2beta1", "presets")],
)
def test_upstream_comes_from_the_package(package: str, upstream: str) -> None:
    assert upstream_of(package) == upstream


@pytest.mark.parametrize("package", ["acme.identity.v1", "pixelshop.identity", "pixelshop.v1"])
def test_packages_outside_the_convention_have_no_upstream(package: str) -> None:
    with pytest.raises(RouteError):
        upstream_of(package)


def test_every_public_method_is_routable_and_no_internal_one_is() -> None:
    descriptors = DescriptorSet.load(DEFAULT_DESCRIPTOR_SET)
    routed = {r.method.full_name for r in RouteTable.from_descriptor_set(descriptors).routes}
    public, internal = set(), set()
    for name in descriptors.file_names:
        for service in descriptors.pool.FindFileByName(name).services_by_name.values():
            target = internal if service.name.endswith("InternalService") else public
            target.update(m.full_name for m in service.methods)

    assert public
    assert internal
    assert routed == public
    assert not routed & internal


# --- request building -----------------------------------------------------------------------


def build(
    body_rule: str = "", query: str = "", body: bytes = b"", content_type: str = ""
) -> dict[str, Any]:
    transcoder = RequestTranscoder(BOOK, (), body_rule)
    return as_dict(transcoder.build((), query, body, content_type))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("draft=true", {"draft": True}),
        ("draft=false&name=n", {"name": "n"}),
        ("pageCount=12345678901", {"page_count": "12345678901"}),
        ("page_count=-5", {"page_count": "-5"}),
        ("genre=GENRE_POEM", {"genre": "GENRE_POEM"}),
        ("genre=1", {"genre": "GENRE_NOVEL"}),
        ("tags=a&tags=b%20c&tags=", {"tags": ["a", "b c", ""]}),
        ("author.name=Ann&author.bornYear=1900", {"author": {"name": "Ann", "born_year": "1900"}}),
        ("updateMask=name,author.name", {"update_mask": "name,author.name"}),
        ("publishTime=2024-01-02T03:04:05Z", {"publish_time": "2024-01-02T03:04:05Z"}),
        ("rating=5", {"rating": 5}),
        ("price=2.5", {"price": 2.5}),
        ("cover=AAEC", {"cover": "AAEC"}),
        ("name=a+b%2Bc", {"name": "a+b+c"}),  # '+' is not a space, as in Envoy
        ("name=first&name=second", {"name": "second"}),
        ("unknown=1&author.unknown=2&name.x=3&=x&flag", {}),
    ],
)
def test_query_parameters_set_fields(query: str, expected: dict[str, Any]) -> None:
    assert build(query=query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("draft=yes", "expected true or false"),
        ("genre=GENRE_NOPE", "GENRE_NOPE"),
        ("pageCount=1.5", "page_count"),
        ("price=cheap", "price"),
        ("labels=x", "map"),
        ("author=x", "message"),
        ("related.name=x", "repeated"),
        ("rating=high", "rating"),
    ],
)
def test_bad_query_parameters_are_client_errors(query: str, message: str) -> None:
    with pytest.raises(TranscodeError, match=message):
        build(query=query)


def test_json_body_into_a_message_field() -> None:
    body = b'{"name": "Ann", "bornYear": "1900", "ignored": true}'

    assert build("author", body=body) == {"author": {"name": "Ann", "born_year": "1900"}}


def test_json_body_into_a_repeated_field() -> None:
    assert build("tags", body=b'["a", "b"]', query="tags=c") == {"tags": ["a", "b", "c"]}


def test_query_merges_over_a_json_body() -> None:
    body = b'{"name": "body", "author": {"name": "Ann"}}'

    result = build("*", body=body, query="author.bornYear=1900&name=query")

    assert result == {"name": "query", "author": {"name": "Ann", "born_year": "1900"}}


def test_raw_body_into_an_http_body_field() -> None:
    transcoder = RequestTranscoder(BOOK, (), "scan")

    message = transcoder.build((), "name=b1", b"\x00\xffraw", "image/tiff")

    assert transcoder.body_mode is BodyMode.RAW
    assert (message.scan.data, message.scan.content_type, message.name) == (
        b"\x00\xffraw",
        "image/tiff",
        "b1",
    )


def test_body_star_on_an_http_body_request_is_raw() -> None:
    http_body = DESCRIPTORS.pool.FindMessageTypeByName("google.api.HttpBody")
    transcoder = RequestTranscoder(http_body, (), "*")

    message = transcoder.build((), "", b"not json {", "text/plain")

    assert (message.data, message.content_type) == (b"not json {", "text/plain")


def test_no_body_rule_ignores_the_body() -> None:
    assert build("", body=b"{not json") == {}


def test_path_variables_set_nested_fields_and_win_over_query() -> None:
    template = PathTemplate.parse("/v1/authors/{author.name}/books/{name}")
    transcoder = RequestTranscoder(BOOK, template.variables, "")

    message = transcoder.build(("ann", "b1"), "name=other&author.name=x&draft=true", b"", "")

    assert as_dict(message) == {"name": "b1", "author": {"name": "ann"}, "draft": True}


# --- responses --------------------------------------------------------------------------------


def book(**fields: Any) -> Any:
    transcoder = RequestTranscoder(BOOK, (), "")
    return json_format.ParseDict(fields, transcoder.message_class())


@pytest.mark.parametrize(
    ("response_body", "expected"),
    [
        ("", b'{"name":"b1","author":{"name":"Ann","bornYear":"1900"},"tags":["x"]}'),
        ("author", b'{"name":"Ann","bornYear":"1900"}'),
        ("tags", b'["x"]'),
        ("name", b'"b1"'),
        ("genre", b'"GENRE_UNSPECIFIED"'),
    ],
)
def test_responses_print_as_proto3_json(response_body: str, expected: bytes) -> None:
    transcoder = ResponseTranscoder(BOOK, response_body, DESCRIPTORS.pool)
    message = book(name="b1", author={"name": "Ann", "bornYear": 1900}, tags=["x"])

    assert transcoder.encode(message) == (expected, "application/json")


def test_a_response_that_is_an_http_body_is_raw() -> None:
    transcoder = ResponseTranscoder(BOOK, "scan", DESCRIPTORS.pool)
    message = book(scan={"contentType": "image/png", "data": "AAE="})

    assert transcoder.raw
    assert transcoder.encode(message) == (b"\x00\x01", "image/png")


def test_a_stream_is_a_json_array() -> None:
    transcoder = ResponseTranscoder(BOOK, "", DESCRIPTORS.pool)

    body, _ = transcoder.encode_stream([book(name="a"), book(), book(name="ü")])

    assert body == '[{"name":"a"},{},{"name":"ü"}]'.encode()


def test_an_unknown_response_body_fails_at_start_up() -> None:
    with pytest.raises(RuleError):
        ResponseTranscoder(BOOK, "author.nope", DESCRIPTORS.pool)
