"""``gcln``: train classifiers and the GCLN defence, evaluate them, run the end-to-end demo."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that defines add_parser(subparsers); imported lazily so
# `gcln --help` stays fast and one broken subcommand cannot break the others.
SUBCOMMANDS = {
    "train-classifier": "gcln_fast.commands.train_classifier",
    "eval": "gcln_fast.commands.evaluate",
    "train": "gcln_fast.commands.train_gcln",
    "demo": "gcln_fast.commands.demo",
    "reproduce": "gcln_fast.commands.reproduce",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gcln", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            importlib.import_module(module).add_parser(sub, name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
