"""qlog traces, one file per connection *and end*."""

from __future__ import annotations

import json
import os

from aioquic.quic.logger import QLOG_VERSION, QuicLogger, QuicLoggerTrace

__all__ = ["EndQlogWriter"]


class EndQlogWriter(QuicLogger):
    """Write each connection's qlog trace to ``<dir>/<ODCID>.<client|server>.qlog``.

    aioquic's QuicFileLogger names files by ODCID alone, which both ends of one connection share:
    two ends given the same directory (one machine, a test, a benchmark) overwrite each other's
    traces and can leave a file of two interleaved JSON documents. The file is written to a
    temporary name and renamed, so a reader never sees half a trace.
    """

    def __init__(self, directory: str) -> None:
        if not os.path.isdir(directory):
            raise ValueError(f"qlog_dir {directory!r} is not a directory")
        self.directory = directory
        super().__init__()

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        doc = trace.to_dict()
        name = f"{doc['common_fields']['ODCID']}.{doc['vantage_point']['type']}.qlog"
        path = os.path.join(self.directory, name)
        with open(path + ".tmp", "w", encoding="utf-8") as fp:
            json.dump({"qlog_format": "JSON", "qlog_version": QLOG_VERSION, "traces": [doc]}, fp)
        os.replace(path + ".tmp", path)
        # Drop it from the logger's internal list, as QuicFileLogger does; else traces pile up.
        self._traces.remove(trace)
