"""Malformed and smuggling HTTP/1.1 vectors, shared by the parser's unit tests
(tests/unit/test_http1_parser.py) and the end-to-end smuggling tests
(tests/integration/test_smuggling.py)."""

from __future__ import annotations

import pytest

from ptproxy.errors import (
    ClientProtocolError,
    MethodNotAllowed,
)

NEXT = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"
R = b"GET / HTTP/1.1\r\nHost: example.com\r\n"
POST = b"POST / HTTP/1.1\r\nHost: example.com\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
S = b"HTTP/1.1 200 OK\r\n"
S_CHUNKED = S + b"Transfer-Encoding: chunked\r\n\r\n"


# --------------------------------------------------------------------------------------------
# Malformed requests and smuggling vectors: (data, exception, does llhttp reject it natively?)

CPE = ClientProtocolError
REQUEST_VECTORS = [
    pytest.param(b"HELLO WORLD\r\n\r\n", CPE, True, id="garbage"),
    pytest.param(b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", CPE, True, id="unknown-method"),
    pytest.param(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", CPE, True, id="lowercase-method"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", CPE, True, id="h2-preface"),
    pytest.param(
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", MethodNotAllowed, False, id="connect"
    ),
    pytest.param(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", CPE, False, id="absolute-form"),
    pytest.param(
        b"GET https://a/x HTTP/1.1\r\nHost: a\r\n\r\n", CPE, False, id="absolute-form-https"
    ),
    pytest.param(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", CPE, False, id="asterisk-without-options"),
    pytest.param(b"GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n", CPE, True, id="authority-form"),
    pytest.param(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", CPE, True, id="8bit-in-target"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", CPE, True, id="space-in-target"),
    pytest.param(b"GET /\r\n\r\n", CPE, False, id="http-0.9"),
    pytest.param(
        b"GET /HTTP/1.1\r\nHost: a\r\n\r\n", CPE, False, id="missing-space-before-version"
    ),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", CPE, False, id="http-2.0"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", CPE, True, id="http-1.2"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", CPE, False, id="missing-host"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", CPE, False, id="missing-host-http-1.0"),
    pytest.param(R + b"Host: b\r\n\r\n", CPE, False, id="two-hosts"),
    pytest.param(R + b"host: example.com\r\n\r\n", CPE, False, id="two-identical-hosts"),
    pytest.param(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", CPE, False, id="empty-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", CPE, False, id="host-with-slash"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", CPE, False, id="host-with-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", CPE, False, id="host-with-userinfo"),
    pytest.param(POST + b"Transfer-Encoding: gzip\r\n\r\n", CPE, True, id="te-gzip"),
    pytest.param(POST + b"Transfer-Encoding: identity\r\n\r\n", CPE, True, id="te-identity"),
    pytest.param(POST + b"Transfer-Encoding: \r\n\r\n", CPE, True, id="te-empty"),
    pytest.param(
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        CPE,
        False,
        id="te-gzip-chunked",
    ),
    pytest.param(
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        CPE,
        True,
        id="te-chunked-twice",
    ),
    pytest.param(
        POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", CPE, True, id="te-chunked-gzip"
    ),
    pytest.param(
        POST + b"Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", CPE, False, id="te-empty-element"
    ),
    pytest.param(
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        CPE,
        True,
        id="te-two-fields-chunked",
    ),
    pytest.param(
        POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        CPE,
        False,
        id="te-two-fields-gzip-then-chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        CPE,
        False,
        id="te-in-http-1.0",
    ),
    pytest.param(
        POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        CPE,
        True,
        id="cl-te",
    ),
    pytest.param(
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        CPE,
        True,
        id="te-cl",
    ),
    pytest.param(
        POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", CPE, True, id="cl-duplicate"
    ),
    pytest.param(
        POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", CPE, True, id="cl-conflicting"
    ),
    pytest.param(POST + b"Content-Length: 3, 3\r\n\r\nabc", CPE, True, id="cl-list"),
    pytest.param(POST + b"Content-Length: -1\r\n\r\n", CPE, True, id="cl-negative"),
    pytest.param(POST + b"Content-Length: +1\r\n\r\nx", CPE, True, id="cl-plus"),
    pytest.param(POST + b"Content-Length: 0x3\r\n\r\nabc", CPE, True, id="cl-hex"),
    pytest.param(POST + b"Content-Length: 3a\r\n\r\nabc", CPE, True, id="cl-trailing-garbage"),
    pytest.param(POST + b"Content-Length: \r\n\r\n", CPE, True, id="cl-empty"),
    pytest.param(
        POST + b"Content-Length: 99999999999999999999999\r\n\r\n", CPE, True, id="cl-overflow"
    ),
    pytest.param(R + b"X: a\r\n b\r\n\r\n", CPE, True, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", CPE, True, id="space-before-first-field"),
    pytest.param(R + b"X : a\r\n\r\n", CPE, True, id="space-before-colon"),
    pytest.param(R + b"X\t: a\r\n\r\n", CPE, True, id="tab-before-colon"),
    pytest.param(R + b": a\r\n\r\n", CPE, True, id="empty-field-name"),
    pytest.param(R + b"Xa\r\n\r\n", CPE, True, id="field-without-colon"),
    pytest.param(R + b"X Y: a\r\n\r\n", CPE, True, id="space-in-field-name"),
    pytest.param(R + b"X\x00: a\r\n\r\n", CPE, True, id="nul-in-name"),
    pytest.param(R + b"X\x01: a\r\n\r\n", CPE, True, id="ctl-in-name"),
    pytest.param(R + b"X\r: a\r\n\r\n", CPE, True, id="cr-in-name"),
    pytest.param(R + b"X: a\x00b\r\n\r\n", CPE, True, id="nul-in-value"),
    pytest.param(R + b"X: a\rb\r\n\r\n", CPE, True, id="cr-in-value"),
    pytest.param(R + b"X: a\x01b\r\n\r\n", CPE, True, id="ctl-in-value"),
    pytest.param(R + b"X: a\x7fb\r\n\r\n", CPE, True, id="del-in-value"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", CPE, True, id="bare-lf-request-line"),
    pytest.param(R + b"X: a\n\r\n", CPE, True, id="bare-lf-field-line"),
    pytest.param(R + b"\n", CPE, True, id="bare-lf-end-of-head"),
    pytest.param(b"GET / HTTP/1.1\rHost: a\r\n\r\n", CPE, True, id="bare-cr-request-line"),
    pytest.param(CHUNKED + b"zz\r\n", CPE, True, id="chunk-size-invalid"),
    pytest.param(CHUNKED + b"fffffffffffffffff\r\n", CPE, True, id="chunk-size-overflow"),
    pytest.param(CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n", CPE, True, id="chunk-size-negative"),
    pytest.param(CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n", CPE, True, id="chunk-size-0x"),
    pytest.param(CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", CPE, True, id="chunk-size-trailing-space"),
    pytest.param(CHUNKED + b"3\nabc\r\n0\r\n\r\n", CPE, True, id="chunk-size-bare-lf"),
    pytest.param(CHUNKED + b"3\r\nabcX0\r\n\r\n", CPE, True, id="chunk-data-without-crlf"),
    pytest.param(CHUNKED + b"3;\x01\r\nabc\r\n0\r\n\r\n", CPE, True, id="chunk-ext-ctl"),
    pytest.param(CHUNKED + b"0\r\nX: a\r\n b\r\n\r\n", CPE, True, id="trailer-obs-fold"),
    pytest.param(CHUNKED + b"0\r\nX: a\x01\r\n\r\n", CPE, True, id="trailer-ctl"),
]


# --------------------------------------------------------------------------------------------
# Malformed responses: always UpstreamError (502)

RESPONSE_VECTORS = [
    pytest.param(b"HELLO\r\n\r\n", True, id="garbage"),
    pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", True, id="two-digit-status"),
    pytest.param(b"HTTP/1.1 1000 OK\r\n\r\n", True, id="four-digit-status"),
    pytest.param(b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n", False, id="status-below-100"),
    pytest.param(b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", False, id="status-600"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
        False,
        id="unrequested-101",
    ),
    pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", False, id="http-2.0"),
    pytest.param(b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", False, id="ctl-in-reason"),
    pytest.param(S + b"Transfer-Encoding: gzip\r\n\r\n", False, id="te-gzip"),
    pytest.param(
        S + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", False, id="te-gzip-chunked"
    ),
    pytest.param(S + b"Transfer-Encoding: chunked, gzip\r\n\r\n", False, id="te-chunked-gzip"),
    pytest.param(
        S + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", False, id="te-chunked-twice"
    ),
    pytest.param(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        False,
        id="te-in-http-1.0",
    ),
    pytest.param(
        S + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", True, id="cl-te"
    ),
    pytest.param(S + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\na", True, id="cl-duplicate"),
    pytest.param(S + b"Content-Length: 1, 1\r\n\r\na", True, id="cl-list"),
    pytest.param(S + b"Content-Length: x\r\n\r\na", True, id="cl-invalid"),
    pytest.param(S + b"X: a\r\n b\r\nContent-Length: 0\r\n\r\n", True, id="obs-fold"),
    pytest.param(S + b"X : a\r\nContent-Length: 0\r\n\r\n", True, id="space-before-colon"),
    pytest.param(S + b"X: a\x00\r\nContent-Length: 0\r\n\r\n", True, id="nul-in-value"),
    pytest.param(S + b"X\x01: a\r\nContent-Length: 0\r\n\r\n", True, id="ctl-in-name"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", True, id="bare-lf"),
    pytest.param(S_CHUNKED + b"zz\r\n", True, id="chunk-size-invalid"),
    pytest.param(S_CHUNKED + b"fffffffffffffffff\r\n", True, id="chunk-size-overflow"),
    pytest.param(S_CHUNKED + b"1\r\naX", True, id="chunk-data-without-crlf"),
]
