"""Python values <-> google.protobuf.Value (JSON values).

Job args, kwargs and return values travel as JSON: None, bool, int, float,
str, lists/tuples and dicts with str keys. JSON has one number type, so a
float with an integral value comes back as an int (within 2**53).
"""
import math

from ._pb import struct_pb2

_MAX_EXACT = 2 ** 53


def _fill(v, x, path):
    if x is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(x, bool):
        v.bool_value = x
    elif isinstance(x, (int, float)):
        if isinstance(x, float) and not math.isfinite(x):
            raise TypeError("%s: %r is not representable in JSON" % (path, x))
        if isinstance(x, int) and abs(x) > _MAX_EXACT:
            raise TypeError("%s: %d does not fit a JSON number exactly" % (path, x))
        v.number_value = x
    elif isinstance(x, str):
        v.string_value = x
    elif isinstance(x, dict):
        fill_struct(v.struct_value, x, path)
    elif isinstance(x, (list, tuple)):
        fill_list(v.list_value, x, path)
    else:
        raise TypeError("%s: %s values cannot be sent to apsd (JSON values only: None, bool, "
                        "int, float, str, list, dict)" % (path, type(x).__name__))


def fill_struct(s, d, path="kwargs"):
    for k, x in d.items():
        if not isinstance(k, str):
            raise TypeError("%s: keys must be strings, not %r" % (path, k))
        _fill(s.fields[k], x, "%s[%r]" % (path, k))
    return s


def fill_list(lv, xs, path="args"):
    for i, x in enumerate(xs):
        _fill(lv.values.add(), x, "%s[%d]" % (path, i))
    return lv


def to_value(x, path="value"):
    v = struct_pb2.Value()
    _fill(v, x, path)
    return v


def to_list(xs, path="args"):
    return fill_list(struct_pb2.ListValue(), list(xs or ()), path)


def to_struct(d, path="kwargs"):
    return fill_struct(struct_pb2.Struct(), dict(d or {}), path)


def from_value(v):
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        n = v.number_value
        if n.is_integer() and abs(n) <= _MAX_EXACT:
            return int(n)
        return n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return from_struct(v.struct_value)
    return from_list(v.list_value)


def from_struct(s):
    return {k: from_value(x) for k, x in s.fields.items()}


def from_list(lv):
    return [from_value(x) for x in lv.values]
