"""The `features.json` of a TFDS dataset: read it into flat feature specs, write it from them.

TFDS stores a dataset's FeatureConnector tree as the JSON form of its `Feature` proto: every
node has a `pythonClassName` and one of `featuresDict` ({"features": {...}}), `sequence`
({"feature": node, "length": "-1"}; RLDS's `steps` is a `Dataset`, which is a sequence),
`tensor` ({"shape": {"dimensions": [...]}, "dtype", "encoding"}; `Scalar` uses it too),
`image` ({"shape", "dtype", "encodingFormat"}) or `text` ({}). In the serialized Example the
tree is flattened with "/" ("steps/observation/image"), and each value under a one-level
sequence is stacked over the steps and stored flat.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PREFIX = "tensorflow_datasets.core.features."
CLASS_NAMES = {
    "dict": _PREFIX + "features_dict.FeaturesDict",
    "dataset": _PREFIX + "dataset_feature.Dataset",
    "tensor": _PREFIX + "tensor_feature.Tensor",
    "scalar": _PREFIX + "scalar.Scalar",
    "image": _PREFIX + "image_feature.Image",
    "text": _PREFIX + "text_feature.Text",
}
DTYPES = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "string",
)


class FeaturesFormatError(ValueError):
    """A features.json that this reader does not understand."""


@dataclass(frozen=True)
class FeatureSpec:
    """One leaf feature.

    `key` is the flat name inside the Example ("steps/observation/image"); `kind` is "tensor",
    "image" or "text"; `shape` is the per-element shape (per step inside `steps`; -1 = unknown);
    `in_sequence` is true for features under the episode's `steps`.
    """

    key: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    in_sequence: bool
    encoding_format: str = ""
    description: str = ""

    @property
    def values_per_element(self) -> int:
        """Flat values per step (or per episode outside `steps`); 1 for images and text."""
        return 1 if self.kind in ("image", "text") else int(math.prod(self.shape))


def _dimensions(node: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in node.get("shape", {}).get("dimensions", []))


def _parse_node(
    node: Mapping[str, Any], key: str, in_sequence: bool, path: Path, out: list[FeatureSpec]
) -> None:
    description = node.get("description", "")
    if "featuresDict" in node:
        for name, child in node["featuresDict"].get("features", {}).items():
            _parse_node(child, f"{key}/{name}" if key else name, in_sequence, path, out)
    elif "sequence" in node:
        if in_sequence:
            raise FeaturesFormatError(
                f"{path}: feature {key!r} is a sequence nested inside a sequence (a ragged feature); "
                "only one level of sequence (the episode's steps) is supported"
            )
        _parse_node(node["sequence"]["feature"], key, True, path, out)
    elif "tensor" in node:
        tensor = node["tensor"]
        if tensor.get("encoding", "none") not in ("none", ""):
            raise FeaturesFormatError(
                f"{path}: feature {key!r} uses tensor encoding "
                f"{tensor['encoding']!r}; only 'none' is supported"
            )
        out.append(
            FeatureSpec(key, "tensor", tensor["dtype"], _dimensions(tensor), in_sequence, "", description)
        )
    elif "image" in node:
        image = node["image"]
        out.append(
            FeatureSpec(
                key,
                "image",
                image.get("dtype", "uint8"),
                _dimensions(image),
                in_sequence,
                image.get("encodingFormat", "png") or "png",
                description,
            )
        )
    elif "text" in node:
        out.append(FeatureSpec(key, "text", "string", (), in_sequence, "", description))
    else:
        kinds = sorted(k for k in node if k not in ("pythonClassName", "description"))
        raise FeaturesFormatError(
            f"{path}: feature {key!r} ({node.get('pythonClassName', '?')}) has an unsupported type {kinds}; "
            "supported: featuresDict, sequence, tensor/scalar, image, text"
        )


def read_features_json(path: str | Path) -> dict[str, FeatureSpec]:
    """Parse a TFDS `features.json` into {flat key: FeatureSpec}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a TFDS dataset directory must hold features.json next to dataset_info.json "
            "(is this the <name>/<version>/ directory of a dataset built with TFDS?)"
        )
    try:
        root = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FeaturesFormatError(f"{path}: not valid JSON ({e})") from e
    if "featuresDict" not in root:
        raise FeaturesFormatError(
            f"{path}: expected a FeaturesDict at the top ('featuresDict' key), found keys {sorted(root)}; "
            "datasets written by TFDS older than 4.x use another format that is not supported"
        )
    specs: list[FeatureSpec] = []
    _parse_node(root, "", False, path, specs)
    return {spec.key: spec for spec in specs}


def _leaf_node(spec: FeatureSpec) -> dict[str, Any]:
    shape = {"dimensions": [str(d) for d in spec.shape]} if spec.shape else {}
    if spec.kind == "image":
        node = {
            "pythonClassName": CLASS_NAMES["image"],
            "image": {"shape": shape, "dtype": spec.dtype, "encodingFormat": spec.encoding_format},
        }
    elif spec.kind == "text":
        node = {"pythonClassName": CLASS_NAMES["text"], "text": {}}
    else:
        node = {
            "pythonClassName": CLASS_NAMES["scalar" if not spec.shape else "tensor"],
            "tensor": {"shape": shape, "dtype": spec.dtype, "encoding": "none"},
        }
    if spec.description:
        node["description"] = spec.description
    return node


def _dict_node(children: dict[str, Any]) -> dict[str, Any]:
    return {"pythonClassName": CLASS_NAMES["dict"], "featuresDict": {"features": children}}


def features_to_json(specs: Mapping[str, FeatureSpec]) -> dict[str, Any]:
    """The features.json tree for flat specs: `steps/...` keys go under an RLDS `Dataset`."""
    root: dict[str, Any] = {}
    for spec in specs.values():
        parts = spec.key.split("/")
        if spec.in_sequence and parts[0] != "steps":
            raise ValueError(f"feature {spec.key!r}: sequence features must live under 'steps/'")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _leaf_node(spec)

    def build(tree: dict[str, Any], top: bool) -> dict[str, Any]:
        children = {}
        for name, child in sorted(tree.items()):
            if "pythonClassName" in child:
                children[name] = child
            elif top and name == "steps":
                children[name] = {
                    "pythonClassName": CLASS_NAMES["dataset"],
                    "sequence": {"feature": build(child, False), "length": "-1"},
                }
            else:
                children[name] = build(child, False)
        return _dict_node(children)

    return build(root, True)
