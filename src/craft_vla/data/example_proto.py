"""`tf.train.Example` encode/decode with the `protobuf` package and no TensorFlow.

The message classes are built at run time from a descriptor that restates the schema of
tensorflow/core/example/{example,feature}.proto (Example -> Features -> map<string, Feature>;
Feature is one of BytesList, FloatList (packed float32), Int64List (packed int64)). They live in
a private descriptor pool, so they never clash with TensorFlow's own classes in one process.

Decoded examples are flat dicts keyed by the Example's feature names ("steps/action", ...):
int64 lists become int64 arrays, float lists float32 arrays, byte lists Python lists of bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FeatureValue = np.ndarray | list[bytes]

_FIELD = descriptor_pb2.FieldDescriptorProto


def _add_field(
    message, name: str, number: int, field_type: int, label: int = _FIELD.LABEL_OPTIONAL, **kw
) -> Any:
    field = message.field.add(name=name, number=number, type=field_type, label=label, **kw)
    return field


@functools.lru_cache(maxsize=1)
def example_class() -> type:
    """The `tensorflow.Example` message class, built once per process."""
    file = descriptor_pb2.FileDescriptorProto(
        name="craft_vla/tf_example.proto", package="tensorflow", syntax="proto3"
    )
    repeated = _FIELD.LABEL_REPEATED
    for name, field_type in (
        ("BytesList", _FIELD.TYPE_BYTES),
        ("FloatList", _FIELD.TYPE_FLOAT),
        ("Int64List", _FIELD.TYPE_INT64),
    ):
        message = file.message_type.add(name=name)
        _add_field(message, "value", 1, field_type, repeated)
        if field_type != _FIELD.TYPE_BYTES:
            message.field[0].options.packed = True

    feature = file.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), start=1
    ):
        _add_field(
            feature, name, number, _FIELD.TYPE_MESSAGE, type_name=f".tensorflow.{type_name}", oneof_index=0
        )

    features = file.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    _add_field(entry, "key", 1, _FIELD.TYPE_STRING)
    _add_field(entry, "value", 2, _FIELD.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    _add_field(
        features, "feature", 1, _FIELD.TYPE_MESSAGE, repeated, type_name=".tensorflow.Features.FeatureEntry"
    )

    example = file.message_type.add(name="Example")
    _add_field(example, "features", 1, _FIELD.TYPE_MESSAGE, type_name=".tensorflow.Features")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def decode_example(data: bytes) -> dict[str, FeatureValue]:
    """Parse a serialized Example into {feature name: int64 array | float32 array | list of bytes}."""
    example = example_class().FromString(data)
    out: dict[str, FeatureValue] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feature.bytes_list.value)
        elif kind == "float_list":
            out[key] = np.array(feature.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[key] = np.array(feature.int64_list.value, dtype=np.int64)
        else:  # a feature with no value set: TF reads it as an empty list
            out[key] = np.zeros(0, dtype=np.float32)
    return out


def encode_example(features: Mapping[str, np.ndarray | Sequence[bytes]]) -> bytes:
    """Serialize {name: values} as an Example (deterministic byte order, keys sorted).

    Bytes sequences go to a BytesList; bool and integer arrays to an Int64List; floating arrays
    to a FloatList (float64 is rounded to float32, as TensorFlow Datasets does).
    """
    example = example_class()()
    feature_map = example.features.feature
    for key, values in features.items():
        if isinstance(values, (list, tuple)) and all(isinstance(v, bytes) for v in values):
            feature_map[key].bytes_list.value.extend(values)
            continue
        array = np.asarray(values)
        if array.dtype.kind in "biu":
            feature_map[key].int64_list.value.extend(array.astype(np.int64).ravel().tolist())
        elif array.dtype.kind == "f":
            feature_map[key].float_list.value.extend(array.astype(np.float32).ravel().tolist())
        else:
            raise TypeError(
                f"feature {key!r}: expected bytes, bool, integer or floating "
                f"values, found dtype {array.dtype}"
            )
    return example.SerializeToString(deterministic=True)
