"""The generated modules, imported in one place."""
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2  # noqa: F401

from apsd.v1 import scheduler_pb2 as pb  # noqa: F401
from apsd.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: F401
from apsd.v1 import workers_pb2 as wpb  # noqa: F401
from apsd.v1 import workers_pb2_grpc as wpb_grpc  # noqa: F401
