"""Output names of protoc code generators, for genrule `outs`."""

# The well-known types the API imports, plus descriptor.proto (reflection).
WKT = [
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
]

def proto_c_outs(protos):
    """protoc-c's outputs (.pb-c.c and .pb-c.h) for each .proto."""
    outs = []
    for p in protos:
        base = p[:-len(".proto")]
        outs += [base + ".pb-c.c", base + ".pb-c.h"]
    return outs

def proto_py_outs(protos):
    """protoc's _pb2.py and grpc_python_plugin's _pb2_grpc.py outputs."""
    outs = []
    for p in protos:
        base = p[:-len(".proto")]
        outs += [base + "_pb2.py", base + "_pb2_grpc.py"]
    return outs
