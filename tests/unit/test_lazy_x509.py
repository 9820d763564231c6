"""tunnel/deferred.py's import_x509: cryptography.x509.name's RFC 4514 attribute-value expression is
compiled at its first use, not at start-up, and parses exactly as the expression compiled at once
(each case in a fresh interpreter: this test process may have imported cryptography already)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fresh import run_fresh


def run(code: str, tmp_path: Path) -> str:
    return run_fresh(code, tmp_path)


def test_the_rfc4514_expression_is_compiled_on_first_use_and_matches_as_compiled_at_once(tmp_path: Path) -> None:
    out = run(
        """
        import re, sys
        compile_before = re.compile
        import ptproxy.tunnel
        from ptproxy.lazyre import LazyPattern
        import cryptography.x509.name as name
        from cryptography import x509

        print("re.compile restored", re.compile is compile_before)
        holders = [m for m in list(sys.modules.values())
                   for v in list(getattr(m, "__dict__", {}).values())
                   if getattr(v, "__name__", None) == "compile_lazily"]
        print("wrapper kept by", len(holders))
        parser = name._RFC4514NameParser
        lazy = [k for k, v in vars(parser).items() if isinstance(v, LazyPattern)]
        eager = [k for k, v in vars(parser).items() if isinstance(v, re.Pattern)]
        print("lazy", lazy, "compiled", parser._STRING_RE._compiled is not None, "others", len(eager))

        # The same matches as the expression compiled at once, on a grid of values.
        reference = re.compile(parser._STRING_RE.pattern, parser._STRING_RE.flags)
        values = ["", "a", "a b", " a", "a ", "#x", "a\\\\,b", "a\\\\2Cb", "\\u00fc\\U00010000z",
                  "x+y", "a=b", "\\x01\\x7f", "q\\"r", "end\\\\", "\\U0010ffff"]
        same = True
        for value in values:
            for start in range(len(value) + 1):
                got, want = parser._STRING_RE.match(value, start), reference.match(value, start)
                same &= (got and got.span()) == (want and want.span())
        print("same matches", same, "compiled", parser._STRING_RE._compiled is not None)

        parsed = x509.Name.from_rfc4514_string("CN=a\\\\,b,O=\\u00fc\\U00010000,OU=x y+L=\\\\2B")
        print([(a.oid._name, a.value) for a in parsed])
        """,
        tmp_path,
    )
    assert out.split("\n")[:5] == [
        "re.compile restored True",
        "wrapper kept by 0",
        "lazy ['_STRING_RE'] compiled False others 4",
        "same matches True compiled True",
        "[('organizationalUnitName', 'x y'), ('localityName', '+'), ('organizationName', '\u00fc\U00010000'), "
        "('commonName', 'a,b')]",
    ], out


def test_platform_imported_by_the_entry_point_compiles_its_expressions_on_use(tmp_path: Path) -> None:
    out = run(
        """
        import re, subprocess, sys
        compile_before = re.compile
        from ptproxy.lazyre import LazyPattern, import_compiling_lazily

        import_compiling_lazily("platform", {"platform"})
        import platform, uuid
        print("re.compile restored", re.compile is compile_before)
        lazy = sorted(k for k, v in vars(platform).items() if isinstance(v, LazyPattern))
        print("lazy", len(lazy) >= 5, all(v._compiled is None for k, v in vars(platform).items() if k in lazy))
        # Used, they answer as the standard library's own (a fresh interpreter's, for comparison).
        mine = [platform.python_implementation(), platform.python_version(), platform.platform(), platform.libc_ver()]
        theirs = subprocess.run([sys.executable, "-c", "import platform; print(repr([platform.python_implementation(), "
                                 "platform.python_version(), platform.platform(), platform.libc_ver()]))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        print("same answers", repr(mine) == theirs, "uuid", uuid.UUID(int=5).version is None)
        import_compiling_lazily("platform", {"platform"})  # imported: nothing happens
        print("again", re.compile is compile_before)
        """,
        tmp_path,
    )
    assert out.split("\n")[:4] == ["re.compile restored True", "lazy True True", "same answers True uuid True", "again True"], out


# Formatters of both styles, good and bad formats: what each makes of a record, or its error.
_FORMATTERS = """
def formatted():
    import logging
    results = []
    for fmt, style in [(None, "%"), ("%(message)s %(levelname)-8s", "%"), ("%(message", "%"), ("no field", "%"),
                       ("{message} {levelname:<8}", "{"), ("{message:zz}", "{"), ("{0.a[x]}", "{"), ("{}", "{")]:
        try:
            f = logging.Formatter(fmt, style=style)
            results.append(f.format(logging.LogRecord("n", logging.INFO, "p", 1, "hi", None, None)))
        except Exception as e:
            results.append(f"{type(e).__name__} {e}")
    return results
"""


def test_logging_imported_by_the_entry_point_compiles_its_expressions_on_use(tmp_path: Path) -> None:
    out = run_fresh(
        """
        import re
        compile_before = re.compile
        from ptproxy.lazyre import LazyPattern, import_compiling_lazily

        import_compiling_lazily("logging", {"logging"})
        import logging
        print("re.compile restored", re.compile is compile_before)
        styles = (logging.PercentStyle, logging.StrFormatStyle)
        lazy = [v for s in styles for v in vars(s).values() if isinstance(v, LazyPattern)]
        # PercentStyle's is used at once (logging's own default Formatter); StrFormatStyle's two wait.
        print("lazy", [v._compiled is None for v in lazy])
        print("results", repr(formatted()))  # used: they validate as the standard library's own
        print("patterns", [v.pattern for v in lazy])
        """,
        tmp_path,
        preamble=_FORMATTERS,
    )
    plain = run_fresh(
        """
        import logging
        print("results", repr(formatted()))
        print("patterns", [logging.PercentStyle.validation_pattern.pattern, logging.StrFormatStyle.fmt_spec.pattern,
                           logging.StrFormatStyle.field_spec.pattern])
        """,
        tmp_path,
        preamble=_FORMATTERS,
    )
    lines = out.split("\n")
    assert lines[:2] == ["re.compile restored True", "lazy [False, True, True]"], out
    assert lines[2:4] == plain.split("\n")[:2]
    assert "ValueError" in lines[2] and "hi" in lines[2]


def test_email_utils_is_imported_at_parseaddrs_first_call_and_rfc822_names_validate_as_before(tmp_path: Path) -> None:
    """cryptography.x509.general_name's ``from email.utils import parseaddr`` gets a forwarder:
    email.utils is not imported by the start-up's x509 import, nor by the head mapping twins, and
    RFC822Name validates a text value as with the real function (which it imports then)."""
    out = run(
        """
        import sys
        import ptproxy.tunnel
        from aioquic import tls
        from cryptography import x509
        from ptproxy.wire import headmap
        print("after start-up imports", "email.utils" in sys.modules)
        print(x509.RFC822Name("user@example.com").value)
        for bad in ("Name <user@example.com>", "not an address <"):
            try:
                x509.RFC822Name(bad)
            except ValueError as exc:
                print("refused", exc)
        import email.utils
        print("real module", type(sys.modules["email.utils"]).__name__, email.utils.parseaddr.__module__)
        print(headmap.http_date(784111777), headmap.http_date(-1) == email.utils.formatdate(-1, usegmt=True).encode())
        """,
        tmp_path,
    )
    assert out.split("\n")[:6] == [
        "after start-up imports False",
        "user@example.com",
        "refused Invalid rfc822name value",
        "refused Invalid rfc822name value",
        "real module module email.utils",
        "b'Sun, 06 Nov 1994 08:49:37 GMT' True",
    ], out
