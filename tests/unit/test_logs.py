"""Log line formats (env_logger text, journald text, JSON), the adapter prefix and levels."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from ptproxy.ops.logs import (
    LOG_LEVELS,
    ConnectionAdapter,
    parse_level,
    setup_logging,
    stderr_is_journal,
)

ROOT = Path(__file__).resolve().parents[2]
TOUCHED = ("ptproxy", "quic", "http3")
TEXT_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (\w+) +(\S+)\] (.*)$")


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """setup_logging changes process-wide loggers; put them back for the other tests."""
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in TOUCHED}
    yield
    for name, (level, handlers) in saved.items():
        log = logging.getLogger(name)
        log.setLevel(level)
        log.handlers[:] = handlers


def _setup(level: str = "info", fmt: Literal["text", "json"] = "text") -> io.StringIO:
    out = io.StringIO()
    setup_logging(level, fmt, environ={}, stream=out)
    return out


def _parts(line: str) -> tuple[str, str, str]:
    """(level, logger, message) of an env_logger-style text line."""
    match = TEXT_LINE.match(line)
    assert match, line
    return match[2], match[3], match[4]


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


# --- levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "level"),
    [
        ("error", logging.ERROR),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        ("info", logging.INFO),
        ("debug", logging.DEBUG),
        ("trace", logging.DEBUG),
        ("INFO", logging.INFO),
    ],
)
def test_log_level_words(word: str, level: int) -> None:
    assert parse_level(word) == level


def test_every_advertised_level_parses() -> None:
    for word in LOG_LEVELS:
        parse_level(word)


@pytest.mark.parametrize("word", ["", "verbose", "critical", "5"])
def test_unknown_log_level_is_an_error_naming_the_choices(word: str) -> None:
    with pytest.raises(ValueError, match="trace"):
        parse_level(word)


def test_level_filters_our_loggers() -> None:
    out = _setup("warn")
    log = logging.getLogger("ptproxy.tunnel")
    log.info("hidden")
    log.warning("shown")
    assert [_parts(line)[2] for line in _lines(out)] == ["shown"]


def test_aioquic_loggers_stay_at_warning_below_trace() -> None:
    out = _setup("debug")
    logging.getLogger("quic").debug("packet noise")
    logging.getLogger("http3").info("h3 noise")
    logging.getLogger("quic").warning("quic trouble")
    logging.getLogger("ptproxy.tunnel").debug("ours")
    assert [_parts(line)[2] for line in _lines(out)] == ["quic trouble", "ours"]


def test_trace_lets_aioquic_debug_through() -> None:
    out = _setup("trace")
    logging.getLogger("quic").debug("packet noise")
    (line,) = _lines(out)
    assert _parts(line) == ("DEBUG", "quic", "packet noise")


def test_setup_twice_replaces_the_handler() -> None:
    _setup()
    out = _setup()
    logging.getLogger("ptproxy").info("once")
    assert len(_lines(out)) == 1
    assert (
        sum(getattr(h, "_ptproxy_handler", False) for h in logging.getLogger("ptproxy").handlers)
        == 1
    )


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("emit", "word"),
    [
        ("error", "ERROR"),
        ("critical", "ERROR"),
        ("warning", "WARN"),
        ("info", "INFO"),
        ("debug", "DEBUG"),
    ],
)
def test_text_line_is_env_logger_shaped(emit: str, word: str) -> None:
    out = _setup("debug")
    getattr(logging.getLogger("ptproxy.tunnel.dialer"), emit)("tunnel ready")
    (line,) = _lines(out)
    # env_logger pads the level to five columns: "[ts INFO  target] msg", "[ts ERROR target] msg".
    assert re.fullmatch(
        rf"\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ {word:<5} ptproxy\.tunnel\.dialer\] tunnel ready",
        line,
    ), line


def test_text_includes_the_traceback() -> None:
    out = _setup()
    try:
        raise OSError("boom")
    except OSError:
        logging.getLogger("ptproxy.app").exception("failed at binding")
    lines = _lines(out)
    assert lines[0].endswith("] failed at binding")
    assert lines[-1] == "OSError: boom"


def test_text_without_journal_keeps_timestamps_even_if_journal_stream_is_stale(
    tmp_path: Path,
) -> None:
    # A JOURNAL_STREAM inherited by a process whose stderr was redirected must be ignored.
    with open(tmp_path / "err", "w") as err:
        st = os.fstat(err.fileno())
        stale = f"{st.st_dev}:{st.st_ino + 1}"
        assert not stderr_is_journal({"JOURNAL_STREAM": stale}, err)
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, err)
    assert not stderr_is_journal({}, None)


_CHILD = textwrap.dedent(
    """
    import logging
    from ptproxy.ops.logs import setup_logging
    setup_logging("info")
    logging.getLogger("ptproxy.tunnel").info("started endpoint at [::]:20010")
    logging.getLogger("ptproxy.tunnel").warning("connection lost")
    """
)


def _run_child(stderr_path: Path, journal_stream: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with open(stderr_path, "w") as err:
        subprocess.run(
            [sys.executable, "-c", _CHILD], cwd=ROOT, env=env, stderr=err, check=True, timeout=30
        )
    return stderr_path.read_text().splitlines()


def test_under_journald_lines_drop_the_timestamp_and_carry_a_priority(tmp_path: Path) -> None:
    # Stand in for journald: stderr is a file, and JOURNAL_STREAM names that file's dev:ino,
    # which is what systemd sets when StandardError=journal.
    path = tmp_path / "stderr"
    path.touch()
    st = path.stat()
    lines = _run_child(path, f"{st.st_dev}:{st.st_ino}")
    assert lines == [
        "<6>[INFO  ptproxy.tunnel] started endpoint at [::]:20010",
        "<4>[WARN  ptproxy.tunnel] connection lost",
    ]


def test_off_journald_lines_carry_a_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.touch()
    st = path.stat()
    for stream in (None, f"{st.st_dev}:{st.st_ino + 1}"):
        lines = _run_child(path, stream)
        assert [_parts(line) for line in lines] == [
            ("INFO", "ptproxy.tunnel", "started endpoint at [::]:20010"),
            ("WARN", "ptproxy.tunnel", "connection lost"),
        ]


# --- json -----------------------------------------------------------------------------------


def test_json_lines_parse_and_carry_extras() -> None:
    out = _setup("debug", "json")
    log = logging.getLogger("ptproxy.frontend")
    log.info("request %s", "GET /", extra={"peer": ("127.0.0.1", 5555), "status": 200})
    log.warning("second")
    first, second = (json.loads(line) for line in _lines(out))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {
        "level": "info",
        "logger": "ptproxy.frontend",
        "msg": "request GET /",
        "peer": ["127.0.0.1", 5555],
        "status": 200,
    }
    assert second["level"] == "warn"
    assert "exc" not in second


def test_json_exception_is_a_string_on_one_line() -> None:
    out = _setup("info", "json")
    try:
        raise ValueError("bad chunk size")
    except ValueError:
        logging.getLogger("ptproxy.http1").exception("parse failed")
    (line,) = _lines(out)
    record = json.loads(line)
    assert record["msg"] == "parse failed"
    assert record["exc"].startswith("Traceback")
    assert record["exc"].endswith("ValueError: bad chunk size")


def test_json_fixed_keys_win_over_same_named_extras() -> None:
    out = _setup("info", "json")
    logging.getLogger("ptproxy").info(
        "x", extra={"level": "spoofed", "ts": "never", "peer": object()}
    )
    record = json.loads(_lines(out)[0])
    assert record["level"] == "info"
    assert record["ts"] != "never"
    assert record["peer"].startswith("<object")


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError):
        setup_logging("info", "xml", environ={})  # type: ignore[arg-type]


# --- adapter --------------------------------------------------------------------------------


def test_connection_adapter_prefixes_like_aioquic() -> None:
    out = _setup("debug")
    conn = ConnectionAdapter(logging.getLogger("ptproxy.tunnel.session"), {"conn": 3})
    conn.info("established (%s)", "192.0.2.1:20010")
    conn.bind(stream=8).debug("request headers")
    ConnectionAdapter(logging.getLogger("ptproxy.x"), {"conn": 4, "stream": None}).info("no stream")
    ConnectionAdapter(logging.getLogger("ptproxy.x"), {}).info("bare")
    messages = [_parts(line)[2] for line in _lines(out)]
    assert messages == [
        "[conn 3] established (192.0.2.1:20010)",
        "[conn 3 stream 8] request headers",
        "[conn 4] no stream",
        "bare",
    ]


def test_connection_adapter_fields_reach_json_with_call_extras() -> None:
    out = _setup("info", "json")
    conn = ConnectionAdapter(logging.getLogger("ptproxy.backend"), {"conn": 3, "stream": 8})
    conn.info("origin answered", extra={"status": 502})
    record = json.loads(_lines(out)[0])
    assert record["msg"] == "[conn 3 stream 8] origin answered"
    assert (record["conn"], record["stream"], record["status"]) == (3, 8, 502)
