"""Run a WSGI app under bjoern (it has no CLI): python bjoern_run.py MODULE:APP HOST PORT."""

import importlib
import sys

import bjoern


def main():
    target, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name or "app")
    bjoern.run(app, host, port)


if __name__ == "__main__":
    main()
