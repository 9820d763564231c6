"""``python -m ptproxy`` and the ``ptproxy`` console script (pyproject's entry point): both start here,
so an end run either way (the Docker image and the systemd unit use the script) gets the same
start-up."""


def main() -> int:
    # The collector paused first, before any of our imports (ops/startup.py: gc only; App.start or
    # the command line resumes it).
    from ptproxy.ops.startup import pause_gc

    pause_gc()
    # A server end's QUIC port bound first, before the command line's own imports and enum's
    # (ops/prebind.py: _socket, no enum member made).
    import sys

    from ptproxy.ops.prebind import prebind

    prebind(sys.argv[1:])
    # Before anything defines an enum member: plain enums hashed in C from here on (ops/enumfast.py).
    from ptproxy.ops.enumfast import identity_enum_hash

    identity_enum_hash()
    # Dataclasses' generated methods taken compiled from a table, not compiled from their text at
    # every start (ops/dataclasscode.py; ops/startup.py resume_gc ends it).
    from ptproxy.ops.dataclasscode import install

    install()
    # platform's eight expressions (6.5M instructions; msgspec imports uuid, uuid imports platform)
    # compiled at first use, never in a normal run (ptproxy/lazyre.py).
    from ptproxy.lazyre import import_compiling_lazily

    import_compiling_lazily("platform", {"platform"})
    # logging's: StrFormatStyle's two (3.9M) serve "{" formats only, which ptproxy has none of
    # (PercentStyle's is compiled at once all the same: logging's own default Formatter uses it).
    import_compiling_lazily("logging", {"logging"})
    from ptproxy.ops.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
