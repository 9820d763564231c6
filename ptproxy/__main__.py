"""``python -m ptproxy``."""

if __name__ == "__main__":
    # The collector paused before the command line's own imports (ops/startup.py; main() resumes it).
    from ptproxy.ops.startup import pause_gc

    pause_gc()
    from ptproxy.ops.cli import main

    raise SystemExit(main())
