"""The raw gRPC stubs of labelfleet.v1, generated from proto/proto/labelfleet/v1/labelfleet.proto
by clients/python/generate.py (do not edit labelfleet_pb2*.py by hand)."""

from . import labelfleet_pb2, labelfleet_pb2_grpc

__all__ = ["labelfleet_pb2", "labelfleet_pb2_grpc"]
