"""Command-line handling shared by trainer.py and infer.py: -m CONFIG,
-o section.key=value, --debug, one-line errors for bad input, and one line
(no traceback) for Ctrl-C and SIGTERM."""
import argparse
import signal
import sys

import yaml


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM; MESSAGE (may be empty: print nothing)
    says what was kept."""

    def __init__(self, message, terminated=False):
        super().__init__(message)
        self.terminated = terminated


def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. -o runner.epochs=2 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def _raise_terminated(signum, frame):
    raise Terminated()


def run(main, argv=None, description=""):
    """Run MAIN(args); a bad-input error becomes one line on stderr and exit code 2;
    Ctrl-C exits 130 and SIGTERM 143 (the shell's codes) with one line."""
    args = parse_args(description, argv)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)  # replaces Paddle's C++ dump
    except ValueError:  # not the main thread (a test harness): leave SIGTERM alone
        previous = None
    try:
        return main(args)
    except (ValueError, OSError, FloatingPointError, yaml.YAMLError) as e:
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        if str(e):
            print(str(e), file=sys.stderr, flush=True)
        sys.exit(143 if e.terminated else 130)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        print("interrupted; nothing was written", file=sys.stderr, flush=True)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
