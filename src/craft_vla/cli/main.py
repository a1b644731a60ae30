"""`craft-vla <command> [--flag value ...]`: every command reads its flags (and `--config_path FILE.yaml`)
with draccus from one dataclass, and runs one library function. Nothing else lives here.

Conveniences on top of draccus, the same for every command: a command's leading arguments may be given
without their flag (`craft-vla cache verify PATH`), a bare boolean flag means True (`--quick`), and a
sequence flag takes space-separated values (`--methods sft_full craft`). Bad input prints one line naming
the problem (set CRAFT_VLA_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    config: str  # "module:Class", the dataclass of the flags, imported when the command runs
    run: str  # "module:function", called with the parsed config; an int it returns is the exit status
    help: str
    positional: tuple[str, ...] = ()  # fields that may be given without their flag, in this order
    presets: tuple[str, ...] = ()  # bare flags that load the config class's PRESETS/<name>.yaml first


COMMANDS = {
    "demo": Command(
        "craft_vla.demo.config:DemoConfig",
        "craft_vla.demo.run:demo_command",
        "the embedded CPU testbed: representation collapse under SFT vs CRaFT",
        presets=("quick", "full", "stress"),
    ),
    "finetune": Command(
        "craft_vla.training.config:FinetuneConfig",
        "craft_vla.training.finetune:finetune",
        "fine-tune a VLA-Adapter model (VLA-Adapter's flags), with --use_craft True for CRaFT",
    ),
    "build-cache": Command(
        "craft_vla.training.config:FinetuneConfig",
        "craft_vla.training.build_cache:build_cache",
        "build the offline anchor cache of the frozen snapshot (the fine-tuning flags + --craft_cache_path)",
    ),
    "cache info": Command(
        "craft_vla.training.anchor_cache:CacheCommand",
        "craft_vla.training.anchor_cache:cache_info",
        "what an anchor cache was built from",
        positional=("path",),
    ),
    "cache verify": Command(
        "craft_vla.training.anchor_cache:CacheCommand",
        "craft_vla.training.anchor_cache:cache_verify",
        "check every shard of an anchor cache against its checksum",
        positional=("path",),
    ),
    "data inspect": Command(
        "craft_vla.data.inspect:InspectConfig",
        "craft_vla.data.inspect:inspect_command",
        "summarise an RLDS dataset and save a grid of sample images",
        positional=("path",),
    ),
    "data generate": Command(
        "craft_vla.sim.demonstrations:GenerateConfig",
        "craft_vla.sim.demonstrations:generate",
        "expert demonstrations of the embedded tabletop suite as an RLDS dataset",
        positional=("out_dir",),
    ),
    "eval libero": Command(
        "craft_vla.eval.command:LiberoCommand",
        "craft_vla.eval.command:libero_command",
        "closed-loop success rates on LIBERO and LIBERO-PRO suites",
    ),
    "eval compare": Command(
        "craft_vla.eval.command:CompareCommand",
        "craft_vla.eval.command:compare_command",
        "two evaluation results side by side",
        positional=("run_a", "run_b"),
    ),
    "plot": Command(
        "craft_vla.training.plots:PlotConfig",
        "craft_vla.training.plots:plot",
        "plot lambda and L_ret vs epsilon from a run directory",
        positional=("run_dir",),
    ),
}


class UsageError(ValueError):
    """A command line that names no command, or a flag given a value it cannot take."""


def load(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def usage(prefix: str = "") -> str:
    """The commands (those under `prefix`, e.g. "eval") with one line of help each."""
    names = [name for name in COMMANDS if name.startswith(prefix)]
    lines = [
        f"usage: craft-vla {prefix + ' ' if prefix else ''}<command> [--flag value ...]",
        "",
        "commands:",
    ]
    lines += [f"  {name:14s} {COMMANDS[name].help}" for name in names]
    lines += ["", "craft-vla <command> --help lists a command's flags, their defaults and choices."]
    return "\n".join(lines)


def find_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """The longest command name that starts `argv`, and the arguments after it."""
    for words in (2, 1):
        name = " ".join(argv[:words])
        if name in COMMANDS:
            return name, list(argv[words:])
    raise UsageError(f"unknown command {' '.join(argv[:2])!r}")


def field_kinds(config_class: type) -> dict[str, str]:
    """ "bool" or "sequence" for the fields whose flags take no value or several."""
    kinds = {}
    for name, hint in typing.get_type_hints(config_class).items():
        if hint is bool:
            kinds[name] = "bool"
        elif typing.get_origin(hint) in (tuple, list):
            kinds[name] = "sequence"
    return kinds


def draccus_args(command: Command, config_class: type, args: Sequence[str]) -> tuple[list[str], str | None]:
    """`args` in draccus's own syntax, and the preset file a bare preset flag selects."""
    args, out, preset = list(args), [], None
    fields = {f.name for f in dataclasses.fields(config_class)}
    for name in command.positional:
        if args and not args[0].startswith("-"):
            out += [f"--{name}", args.pop(0)]
    kinds = field_kinds(config_class)
    while args:
        token = args.pop(0)
        name = token[2:] if token.startswith("--") else ""
        values = []
        while args and not args[0].startswith("--"):
            values.append(args.pop(0))
        if name in command.presets and not values:
            preset = str(config_class.PRESETS / f"{name}.yaml")
            out += [token, "true"]  # also as a flag: with two presets the config sees both and refuses
            continue
        if name in fields and kinds.get(name) == "bool" and not values:
            values = ["true"]
        if (
            name in fields
            and kinds.get(name) == "sequence"
            and (len(values) != 1 or not values[0].startswith("["))
        ):
            values = ["[" + ",".join(values) + "]"]
        out += [token, *values]
    return out, preset


def parse(name: str, args: Sequence[str]) -> Any:
    """The command's config from its arguments (`--help` prints the flags and exits)."""
    import draccus
    from draccus.utils import ParsingError

    command = COMMANDS[name]
    config_class = load(command.config)
    flags, preset = draccus_args(command, config_class, args)
    try:
        cfg = draccus.parse(config_class, config_path=preset, args=flags, prog=f"craft-vla {name}")
    except ParsingError as error:  # draccus wraps the config's own check: show that one
        cause = error.__cause__ if isinstance(error.__cause__, ValueError) else error
        raise UsageError(str(cause).splitlines()[0]) from error
    if hasattr(cfg, "validate"):  # every check before any expensive stage
        cfg.validate()
    return cfg


def run_command(name: str, args: Sequence[str]) -> int:
    """Parse, then run; a user's mistake is one line on stderr (exit 2 for flags, 1 for what the run met)."""
    debug = bool(os.environ.get("CRAFT_VLA_DEBUG"))
    try:
        cfg = parse(name, args)
    except SystemExit as stop:  # argparse has printed the usage and its one-line error (or the help: exit 0)
        if not stop.code:
            raise
        return int(stop.code) if isinstance(stop.code, int) else 2
    except (UsageError, ValueError, TypeError) as error:
        if debug:
            raise
        print(f"craft-vla {name}: error: {error}", file=sys.stderr)
        return 2
    try:
        status = load(COMMANDS[name].run)(cfg)  # an exit status, or what the library function returns
        return status if isinstance(status, int) else 0
    except (ValueError, OSError, LookupError) as error:  # bad input met while running: files, data, caches
        if debug:
            raise
        print(f"craft-vla {name}: error: {error}\n(set CRAFT_VLA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    try:
        name, rest = find_command(argv)
    except UsageError as error:
        groups = {n.split()[0] for n in COMMANDS if " " in n}
        if argv[0] in groups:  # `craft-vla eval`, `craft-vla cache --help`: the group's commands
            print(usage(argv[0]), file=sys.stdout if argv[1:2] in (["-h"], ["--help"]) else sys.stderr)
            return 0 if argv[1:2] in (["-h"], ["--help"]) else 2
        print(f"craft-vla: {error}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(name, rest)


if __name__ == "__main__":
    sys.exit(main())
