"""`python -m core ...`: the headless CLI (core/cli/main.py)."""
import signal
import sys


def _load_main():
    """Ctrl-C while torch loads is held until it has loaded, then exits 130: raised inside
    a C++ extension's import, KeyboardInterrupt can abort the process ("terminate called")."""
    held: list = []
    before = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        from core.cli.main import main
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
    if held:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    return main


if __name__ == "__main__":
    sys.exit(_load_main()())
