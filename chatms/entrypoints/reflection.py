"""gRPC server reflection, so `grpcurl list` and `describe` work without the .proto files.

betterproto2's generated code carries no protobuf descriptors, so `chatms protos` also
writes the descriptor set of protos/ (chatms/protogen/descriptors.binpb, checked for
staleness with the generated code); it is loaded here into a private descriptor pool.
"""

from __future__ import annotations

from collections.abc import Collection
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2

DESCRIPTORS = "descriptors.binpb"


def descriptors() -> Any:
    """A pool with our protos plus the health and reflection protos we also serve."""
    pool = descriptor_pool.DescriptorPool()
    raw = resources.files("chatms.protogen").joinpath(DESCRIPTORS).read_bytes()
    files = list(descriptor_pb2.FileDescriptorSet.FromString(raw).file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    for proto in files:  # protoc lists dependencies before the files that import them
        pool.Add(proto)
    return pool


def with_reflection(services: Collection[Any]) -> list[Any]:
    """`services` plus the reflection services (v1 and v1alpha) describing them."""
    return list(ServerReflection.extend(services, pool=descriptors()))
