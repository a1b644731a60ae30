"""`craft-vla data inspect PATH [--out PNG]` and `craft-vla data generate OUT_DIR ...` (the embedded suite)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["generate"]:
        from craft_vla.cli.sim import main as generate_main

        return generate_main(argv[1:])
    parser = argparse.ArgumentParser(prog="craft-vla data", description=__doc__)
    parser.add_argument("action", choices=("inspect", "generate"))
    parser.add_argument("path", help="dataset directory (<root>/<name> or <root>/<name>/<version>)")
    parser.add_argument("--out", default=None, help="PNG grid of sample images (default: none)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--kind", default=None, help="dataset kind (libero | identity); default from the name")
    args = parser.parse_args(argv)
    from craft_vla.cli.data import inspect

    try:
        inspect(args.path, args.out, split=args.split, num_images=args.num_images, kind=args.kind)
    except (FileNotFoundError, ValueError) as err:
        print(f"craft-vla data inspect: {err}", file=sys.stderr)
        return 1
    return 0
