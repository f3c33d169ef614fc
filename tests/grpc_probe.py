"""grpcio's own health and reflection clients, run as a separate process.

grpcio-health-checking and grpclib both register `grpc.health.v1` in protobuf's default
descriptor pool, so the two cannot share the test process: `probe(...)` runs this module.
Usage: python -m tests.grpc_probe health TARGET SERVICE... | reflect TARGET SERVICE
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT


def probe(*args: str) -> str:
    """Run this module with `args`; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.grpc_probe", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _health(target: str, services: list[str]) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            except grpc.RpcError as exc:
                print(exc.code().name)
            else:
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _reflect(target: str, service_name: str) -> None:
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        service = DescriptorPool(database).FindServiceByName(service_name)
        methods = {
            m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods
        }
    print(json.dumps({"services": services, "methods": methods}))


if __name__ == "__main__":
    command, target, *rest = sys.argv[1:]
    if command == "health":
        _health(target, rest)
    else:
        _reflect(target, rest[0])
