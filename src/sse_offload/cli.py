"""The ``sse-offload`` console script (rule-file tools arrive with the rules-language issue)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="sse-offload",
        description="Server-Sent Events gateway. Run it with: twistd -n sse-offload --rules FILE",
    )
    parser.add_argument("--version", action="version", version=f"sse-offload {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
