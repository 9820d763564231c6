"""Logging setup: env_logger-style text (like the Rust original) or JSON lines, on stderr.

Text: ``[2026-11-23T10:00:00Z INFO  ptproxy.tunnel] message``. Under journald (``JOURNAL_STREAM``
names our stderr) the timestamp is dropped, since the journal stamps every line itself, and a
``<N>`` syslog priority prefix is added instead: journald strips it (``SyslogLevelPrefix=``
defaults to on) and files the line at that priority, so ``journalctl -p warning`` works.

JSON: one object per line, ``{"ts", "level", "logger", "msg", **extra}``, for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

__all__ = [
    "LOG_LEVELS",
    "ConnectionAdapter",
    "JsonFormatter",
    "TextFormatter",
    "parse_level",
    "setup_logging",
    "stderr_is_journal",
]

LogFormat = Literal["text", "json"]

# The --log-level vocabulary. "trace" is debug plus aioquic's own (very chatty) loggers.
LOG_LEVELS: tuple[str, ...] = ("error", "warn", "warning", "info", "debug", "trace")
_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}
# aioquic logs under these names (quic/connection.py, h3/connection.py), outside our tree.
AIOQUIC_LOGGERS = ("quic", "http3")

# env_logger's level words, padded to five columns as it does ("INFO ", "WARN ").
_TEXT_LEVEL = {
    logging.CRITICAL: "ERROR",
    logging.ERROR: "ERROR",
    logging.WARNING: "WARN",
    logging.INFO: "INFO",
    logging.DEBUG: "DEBUG",
}
_JSON_LEVEL = {
    logging.CRITICAL: "critical",
    logging.ERROR: "error",
    logging.WARNING: "warn",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}
# syslog priorities for journald's "<N>" prefix (sd-daemon(3)).
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # 3.12+
}

# Marks handlers this module installed, so a second setup_logging() replaces rather than adds.
_OURS = "_ptproxy_handler"


def parse_level(name: str) -> int:
    """Map a ``--log-level`` word to a ``logging`` level; ValueError for anything else."""
    try:
        return _LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r} (expected one of {', '.join(LOG_LEVELS)})"
        ) from None


def _floor(levelno: int, table: Mapping[int, Any]) -> Any:
    # Custom levels (e.g. 25) take the name of the standard level at or below them.
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return table[level]
    return table[logging.DEBUG]


def stderr_is_journal(
    environ: Mapping[str, str] = os.environ, stream: TextIO | None = None
) -> bool:
    """True when ``JOURNAL_STREAM`` (``"<st_dev>:<st_ino>"``) describes our stderr.

    systemd sets it for a unit whose stderr goes to the journal; comparing the device and inode
    (systemd.exec(5)) guards against a value inherited by a process whose stderr was redirected.
    """
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        fd = (stream if stream is not None else sys.stderr).fileno()
    except (AttributeError, OSError, ValueError):
        fd = 2
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return value.strip() == f"{st.st_dev}:{st.st_ino}"


class TextFormatter(logging.Formatter):
    """``[ts LEVEL logger] msg``; with ``journal=True``: ``<N>[LEVEL logger] msg``."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        level = _floor(record.levelno, _TEXT_LEVEL)
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        if self.journal:
            return f"<{_floor(record.levelno, _SYSLOG_PRIORITY)}>[{level:<5} {record.name}] {text}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return f"[{ts} {level:<5} {record.name}] {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields are merged in, exceptions go to ``"exc"``."""

    def format(self, record: logging.LogRecord) -> str:
        secs = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{secs}.{int(record.msecs):03d}Z",
            "level": _floor(record.levelno, _JSON_LEVEL),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            # The four fixed keys win over a same-named extra: consumers rely on them.
            if key not in _RECORD_ATTRS and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is an address tuple, a Path or an exception still logs.
        return json.dumps(out, default=str, ensure_ascii=False)


class ConnectionAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with ``[conn 3 stream 8] `` built from ``extra`` (aioquic style).

    Keys appear in ``extra``'s order; None values are left out, so one adapter per connection
    can be narrowed per stream with ``adapter.bind(stream=8)``. The fields are also attached to
    the record (merged with any per-call ``extra=``), so JSON output carries them as keys.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = self.extra or {}
        prefix = " ".join(f"{k} {v}" for k, v in fields.items() if v is not None)
        kwargs["extra"] = {**fields, **kwargs.get("extra", {})}
        return (f"[{prefix}] {msg}" if prefix else msg), kwargs

    def bind(self, **fields: Any) -> ConnectionAdapter:
        """A new adapter on the same logger with ``fields`` added to (or replacing) ours."""
        return ConnectionAdapter(self.logger, {**(self.extra or {}), **fields})


def setup_logging(
    level: str = "info",
    fmt: LogFormat = "text",
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
) -> None:
    """Install one stderr handler on the ``ptproxy`` logger (and aioquic's). Safe to call twice.

    aioquic's loggers get the same handler but stay at WARNING unless ``level="trace"``.
    """
    levelno = parse_level(level)
    if fmt == "text":
        formatter: logging.Formatter = TextFormatter(journal=stderr_is_journal(environ, stream))
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r} (expected text or json)")

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)

    aioquic_level = logging.DEBUG if level.strip().lower() == "trace" else logging.WARNING
    levels = {"ptproxy": levelno, **dict.fromkeys(AIOQUIC_LOGGERS, aioquic_level)}
    for name, lvl in levels.items():
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if getattr(h, _OURS, False)]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(lvl)
        # Propagation stays on: the root logger has no handler in the service (nothing calls
        # basicConfig), and pytest's caplog listens on root.
