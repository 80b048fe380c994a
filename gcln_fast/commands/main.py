"""``gcln``: train classifiers and the GCLN defence, evaluate them, run the end-to-end demo."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..utils.errors import GclnError, UsageError
from ._args import release_outputs

# subcommand -> module that defines add_parser(subparsers); imported lazily so
# `gcln --help` stays fast and one broken subcommand cannot break the others.
SUBCOMMANDS = {
    "train-classifier": "gcln_fast.commands.train_classifier",
    "eval": "gcln_fast.commands.evaluate",
    "train": "gcln_fast.commands.train_gcln",
    "demo": "gcln_fast.commands.demo",
    "reproduce": "gcln_fast.commands.reproduce",
}
DEBUG_ENV = "GCLN_DEBUG"  # set to 1 to see the traceback of an error the commands report in one line


def _build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="gcln", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, module in SUBCOMMANDS.items():
        try:
            parsers[name] = importlib.import_module(module).add_parser(sub, name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
    return parser, parsers


def main(argv=None) -> int:
    """Run one subcommand; returns its exit code. A bad setting found after parsing exits 2 with the
    command's usage (as argparse does); a run stopped by a reported error (a corrupt checkpoint, a
    non-finite loss, an output in use, ...) prints one line and exits 1; Ctrl-C exits 130."""
    parser, parsers = _build_parser()
    args = parser.parse_args(argv)
    prog = parsers[args.command].prog
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        parsers[args.command].print_usage(sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (GclnError, ValueError, FileNotFoundError) as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        hint = "" if isinstance(exc, GclnError) else f" ({DEBUG_ENV}=1 shows the traceback)"
        print(f"{prog}: error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted (training continues from its last checkpoint with --resume)", file=sys.stderr)
        return 130
    finally:
        release_outputs()


if __name__ == "__main__":
    sys.exit(main())
