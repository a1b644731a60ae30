"""Flat "a/b/c" keys <-> nested dicts, the way TFDS flattens a FeaturesDict into an Example."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten_nested(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"steps": {"action": x}} -> {"steps/action": x}."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}/{name}" if prefix else name
        if isinstance(value, Mapping):
            flat.update(flatten_nested(value, key))
        else:
            flat[key] = value
    return flat


def nest_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"steps/action": x} -> {"steps": {"action": x}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
