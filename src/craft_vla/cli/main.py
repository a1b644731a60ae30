"""`craft-vla <command>`: one entry point, each command in its own module, imported only when used."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("craft_vla.cli.demo", "the embedded CPU testbed: representation collapse under SFT vs CRaFT"),
    "finetune": ("craft_vla.cli.finetune", "fine-tune a VLA-Adapter model, with --use_craft True for CRaFT"),
    "build-cache": ("craft_vla.cli.build_cache", "build the offline anchor cache from the frozen snapshot"),
    "cache": ("craft_vla.cli.cache", "inspect or verify an anchor cache: cache info|verify PATH"),
    "data": ("craft_vla.cli.data_command", "inspect a dataset or generate the embedded suite: data inspect|generate"),
    "eval": ("craft_vla.cli.eval", "closed-loop evaluation: eval libero|compare"),
    "plot": ("craft_vla.cli.plot", "plot λ and L_ret vs ε from a run directory"),
}


def usage() -> str:
    lines = ["usage: craft-vla <command> [args]", "", "commands:"]
    lines += [f"  {name:12s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"craft-vla: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
