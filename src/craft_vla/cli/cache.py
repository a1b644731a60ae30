"""`craft-vla cache info|verify PATH`: what an anchor cache was built from; whether it is intact."""

from __future__ import annotations

import argparse
import json


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="craft-vla cache", description=__doc__)
    parser.add_argument("action", choices=("info", "verify"))
    parser.add_argument("path")
    args = parser.parse_args(argv)
    from craft_vla.craft.cache import AnchorCache, CacheError

    try:
        cache = AnchorCache(args.path, verify_checksums=args.action == "verify")
    except CacheError as err:
        print(f"INVALID: {err}")
        return 1
    if args.action == "verify":
        print(f"OK: {args.path}: {len(cache)} samples in {len(cache.meta['shards'])} shards, checksums match")
        return 0
    meta = {k: v for k, v in cache.meta.items() if k != "shards"}
    meta["shards"] = len(cache.meta["shards"])
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0
