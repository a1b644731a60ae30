"""Where craft-vla caches what it can rebuild (RLDS indexes, dataset statistics, the
demo's data and snapshot).

One root for everything, read when asked (not at import), so a test or a user can point it elsewhere with
`CRAFT_VLA_CACHE` at any time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "CRAFT_VLA_CACHE"


def cache_dir(*parts: str) -> Path:
    """`$CRAFT_VLA_CACHE/parts...`, else `$XDG_CACHE_HOME/craft_vla/parts...`,
    else `~/.cache/craft_vla/parts...`."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "craft_vla"
    return Path(root).expanduser().joinpath(*parts)


def cached_build(final: Path, build: Callable[[Path], None], complete: str = "", describe: str = "") -> Path:
    """`final`, built by `build(tmp_dir)` into a temporary sibling and renamed into place when complete.

    An interrupted build leaves no half directory under `final`'s name, and of two concurrent builds the
    first to finish wins. `complete` names a file whose presence marks a finished directory (default: any).
    With `describe`, says on the console whether it reuses the cached `describe` or builds it.
    """
    if final.exists():
        if not complete or (final / complete).exists():
            if describe:
                print(f"reusing the cached {describe}: {final}")
            return final
        shutil.rmtree(final)  # left incomplete by an older version of this code: build it again
    if describe:
        print(f"building the {describe} (cached for later runs): {final}")
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # a concurrent run finished first: keep its result
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final
