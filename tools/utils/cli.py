"""Command-line handling shared by trainer.py and infer.py: -m CONFIG,
-o section.key=value, --debug, and one-line errors for bad input."""
import argparse
import sys

import yaml


def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. -o runner.epochs=2 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def run(main, argv=None, description=""):
    """Run MAIN(args); a bad-input error becomes one line on stderr and exit code 2."""
    args = parse_args(description, argv)
    try:
        return main(args)
    except (ValueError, OSError, FloatingPointError, yaml.YAMLError) as e:
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
