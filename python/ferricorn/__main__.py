"""Command-line entry point: `ferricorn ...` and `python -m ferricorn ...`.

Python only starts the process; everything after argv is handed over runs in Rust.
"""

import sys


def main() -> None:
    from ferricorn._ferricorn import run

    sys.exit(run(sys.argv))


if __name__ == "__main__":
    main()
