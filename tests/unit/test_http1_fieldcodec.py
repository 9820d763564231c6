"""Field codec twins (pure and compiled, through the ``impl`` fixture): names, values, hop-by-hop."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptproxy.errors import HeaderError, ProtocolError
from ptproxy.wire import fieldcodec
from tests.conftest import twin_fixture

impl = twin_fixture("ptproxy.wire._fieldcodec_py", "ptproxy._speedups.fieldcodec")

TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def reference_title(name: bytes) -> bytes:
    out = bytearray()
    up = True
    for c in name:
        ch = bytes([c])
        out += ch.upper() if up else ch.lower()
        up = ch == b"-"
    return bytes(out)


def test_all_is_exact(impl: ModuleType) -> None:
    assert impl.__all__ == [
        "HOP_BY_HOP",
        "title_case",
        "validate_name",
        "validate_value",
        "h1_to_h3_fields",
        "h3_to_h1_fields",
    ]


def test_facade_exposes_the_twin() -> None:
    assert fieldcodec.IMPLEMENTATION in ("compiled", "pure")
    assert set(fieldcodec.__all__) == {"IMPLEMENTATION", *fieldcodec._impl.__all__}


def test_hop_by_hop(impl: ModuleType) -> None:
    assert impl.HOP_BY_HOP == frozenset(
        {
            b"connection",
            b"keep-alive",
            b"proxy-connection",
            b"te",
            b"trailer",
            b"transfer-encoding",
            b"upgrade",
            b"proxy-authenticate",
            b"proxy-authorization",
        }
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"content-type", b"Content-Type"),
        (b"x-FOO", b"X-Foo"),
        (b"www-authenticate", b"Www-Authenticate"),
        (b"CONTENT-LENGTH", b"Content-Length"),
        (b"Content-Type", b"Content-Type"),
        (b"etag", b"Etag"),
        (b"x--a", b"X--A"),
        (b"-a-", b"-A-"),
        (b"x_y.z", b"X_y.z"),
        (b"1st-2nd", b"1st-2nd"),
        (b"a", b"A"),
        (b"", b""),
    ],
)
def test_title_case(impl: ModuleType, name: bytes, expected: bytes) -> None:
    assert impl.title_case(name) == expected
    assert impl.title_case(name) == expected  # second call may come from the cache


@given(st.binary(max_size=40))
def test_title_case_matches_reference(name: bytes) -> None:
    from ptproxy.wire import _fieldcodec_py

    assert _fieldcodec_py.title_case(name) == reference_title(name)


@given(st.text(alphabet=TCHAR.decode(), min_size=1, max_size=40).map(str.encode))
def test_title_case_twins_agree(name: bytes) -> None:
    from ptproxy.wire import _fieldcodec_py

    assert fieldcodec.title_case(name) == _fieldcodec_py.title_case(name) == reference_title(name)


@pytest.mark.parametrize("name", [b"x", b"Content-Type", TCHAR])
def test_valid_names(impl: ModuleType, name: bytes) -> None:
    impl.validate_name(name)


@pytest.mark.parametrize(
    "name",
    [
        b"",
        b"a b",
        b"a:b",
        b":path",
        b"a\x00",
        b"a\r",
        b"a\n",
        b"a\t",
        b"caf\xe9",
        b"a\x7f",
        b"(a)",
        b"a/b",
    ],
)
def test_invalid_names(impl: ModuleType, name: bytes) -> None:
    with pytest.raises(HeaderError) as info:
        impl.validate_name(name)
    assert isinstance(info.value, ProtocolError) and info.value.status == 400


@pytest.mark.parametrize(
    "value", [b"", b"text/html; q=0.9", b"a\tb", b"caf\xc3\xa9\xff\x80", b" lead", b"~!"]
)
def test_valid_values(impl: ModuleType, value: bytes) -> None:
    impl.validate_value(value)


@pytest.mark.parametrize(
    "value", [b"a\x00b", b"a\rb", b"a\nb", b"a\r\nX: y", b"\x01", b"\x1f", b"a\x7f"]
)
def test_invalid_values(impl: ModuleType, value: bytes) -> None:
    with pytest.raises(HeaderError):
        impl.validate_value(value)


@given(st.binary(max_size=30))
def test_validate_value_twins_agree(value: bytes) -> None:
    from ptproxy.wire import _fieldcodec_py

    bad = any(c < 0x20 and c != 0x09 or c == 0x7F for c in value)
    for module in (_fieldcodec_py, fieldcodec):
        if bad:
            with pytest.raises(HeaderError):
                module.validate_value(value)
        else:
            module.validate_value(value)


def test_h1_to_h3_lowercases_strips_and_keeps_order(impl: ModuleType) -> None:
    fields = [
        (b"Content-Type", b" text/plain \t"),
        (b"X-Multi", b"1"),
        (b"Accept", b"*/*"),
        (b"x-multi", b"2"),
    ]
    assert impl.h1_to_h3_fields(fields) == [
        (b"content-type", b"text/plain"),
        (b"x-multi", b"1"),
        (b"accept", b"*/*"),
        (b"x-multi", b"2"),
    ]


def test_h1_to_h3_drops_hop_by_hop_and_host(impl: ModuleType) -> None:
    fields = [(b"Host", b"example.com")] + [(n.upper(), b"v") for n in sorted(impl.HOP_BY_HOP)]
    fields.append((b"X-Kept", b"yes"))
    assert impl.h1_to_h3_fields(fields) == [(b"x-kept", b"yes")]


def test_h1_to_h3_drops_connection_listed_fields(impl: ModuleType) -> None:
    fields = [
        (b"Connection", b"X-Secret , close"),
        (b"X-Secret", b"1"),
        (b"connection", b"x-other,,"),
        (b"X-OTHER", b"2"),
        (b"Close", b"is-listed-too"),
        (b"X-Public", b"3"),
    ]
    assert impl.h1_to_h3_fields(fields) == [(b"x-public", b"3")]


@pytest.mark.parametrize(
    "field",
    [
        (b"Bad Name", b"v"),
        (b"", b"v"),
        (b"X", b"a\x00"),
        (b"X", b"a\r\nInjected: 1"),
        (b"X", b"\x7f"),
    ],
)
def test_h1_to_h3_rejects_invalid_fields(impl: ModuleType, field: tuple[bytes, bytes]) -> None:
    with pytest.raises(HeaderError):
        impl.h1_to_h3_fields([field])


def test_h3_to_h1_title_cases_and_skips_pseudo_headers(impl: ModuleType) -> None:
    fields = [
        (b":status", b"200"),
        (b":authority", b"a"),
        (b"content-type", b"text/html"),
        (b"set-cookie", b"a=1"),
        (b"x-request-id", b"7"),
        (b"set-cookie", b"b=2"),
    ]
    assert impl.h3_to_h1_fields(fields) == [
        (b"Content-Type", b"text/html"),
        (b"Set-Cookie", b"a=1"),
        (b"X-Request-Id", b"7"),
        (b"Set-Cookie", b"b=2"),
    ]


def test_h3_to_h1_drops_hop_by_hop_defensively(impl: ModuleType) -> None:
    fields = [
        (b"connection", b"x-a"),
        (b"x-a", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
    ]
    fields += [(b"upgrade", b"h2c"), (b"keep-alive", b"5"), (b"x-b", b"2")]
    assert impl.h3_to_h1_fields(fields) == [(b"X-B", b"2")]


@pytest.mark.parametrize("value", [b"a\r\nX-Injected: 1", b"a\nb", b"a\x00", b"\x01"])
def test_h3_to_h1_rejects_line_injection(impl: ModuleType, value: bytes) -> None:
    with pytest.raises(HeaderError):
        impl.h3_to_h1_fields([(b"x-a", value)])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"x-a", b"X-B", b"Content-Type", b"Connection", b"TE", b"host", b"Via"]
            ),
            st.binary(max_size=10).filter(
                lambda v: not any(c < 0x20 and c != 9 or c == 0x7F for c in v)
            ),
        ),
        max_size=12,
    )
)
def test_h1_to_h3_properties(fields: list[tuple[bytes, bytes]]) -> None:
    out = fieldcodec.h1_to_h3_fields(fields)
    from ptproxy.wire import _fieldcodec_py

    assert out == _fieldcodec_py.h1_to_h3_fields(fields)
    for name, value in out:
        assert name == name.lower()
        assert name not in fieldcodec.HOP_BY_HOP and name != b"host"
        assert value == value.strip(b" \t")
    # back to HTTP/1.1: names title-cased, same values in the same order
    back = fieldcodec.h3_to_h1_fields(out)
    assert [v for _, v in back] == [v for _, v in out]
    assert [n.lower() for n, _ in back] == [n for n, _ in out]
