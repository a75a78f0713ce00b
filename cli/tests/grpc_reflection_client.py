"""A gRPC client in another language: finds berth's API by server
reflection, checks health, and lists namespaces with messages built from the
reflected descriptors alone. Prints the namespace names."""

import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(address: str) -> None:
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(
        health_pb2.HealthCheckRequest(service="berth.api.v1.Namespaces"), timeout=10
    )
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        sys.exit(f"not serving: {answer.status}")

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for wanted in ("berth.api.v1.Pods", "berth.api.v1.Deployments", "etcdserverpb.KV"):
        if wanted not in services:
            sys.exit(f"{wanted} not listed by reflection: {sorted(services)}")

    pool = DescriptorPool(database)
    method = pool.FindServiceByName("berth.api.v1.Namespaces").methods_by_name["List"]
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/berth.api.v1.Namespaces/List",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    listed = call(request_type(), timeout=10)
    print(" ".join(sorted(item.metadata.name for item in listed.items)))


if __name__ == "__main__":
    main(sys.argv[1])
