"""``ofs rpc``: a grpcurl-style client that learns a server's API from gRPC server reflection.

It needs no local ``.proto`` files, so it works against any server with reflection on (ours or the
reference's): ``list`` the services, ``describe`` a service or message, ``call`` a unary method with a
JSON request (proto3 JSON mapping) and print the JSON reply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from online_feature_store.client import open_channel
from online_feature_store.errors import InvalidInputError, NotFoundError, UnavailableError

__all__ = ["Reflector"]

_REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


class Reflector:
    """Descriptors of the services a server exposes, fetched through its reflection service."""

    def __init__(self, channel: grpc.Channel) -> None:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        self.channel = channel
        self._db = ProtoReflectionDescriptorDatabase(channel)
        self._pool = descriptor_pool.DescriptorPool(self._db)

    def services(self) -> list[str]:
        """Full names of every service (the reflection service included)."""
        try:
            return sorted(self._db.get_services())
        except grpc.RpcError as exc:
            raise _error(exc, "list services") from None

    def service(self, name: str) -> ServiceDescriptor:
        try:
            return self._pool.FindServiceByName(name)
        except KeyError:
            raise NotFoundError(f"the server has no service {name!r} (see `ofs rpc ADDRESS list`)") from None
        except grpc.RpcError as exc:
            # An unknown symbol is an error message inside the reflection stream for a grpcio server
            # and the stream's NOT_FOUND status for tonic's (ofs serve's front): the same answer.
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(
                    f"the server has no service {name!r} (see `ofs rpc ADDRESS list`)"
                ) from None
            raise _error(exc, f"describe {name}") from None

    def message(self, name: str) -> Descriptor:
        try:
            return self._pool.FindMessageTypeByName(name)
        except KeyError:
            raise NotFoundError(f"the server declares no message {name!r}") from None

    def describe(self, symbol: str) -> str:
        """A short text description of a service (its methods) or a message (its fields)."""
        if symbol in self.services():
            svc = self.service(symbol)
            lines = [f"service {svc.full_name} {{"]
            for m in svc.methods:
                lines.append(f"  rpc {m.name}({m.input_type.full_name}) returns ({m.output_type.full_name});")
            return "\n".join([*lines, "}"])
        msg = self.message(symbol)
        lines = [f"message {msg.full_name} {{"]
        for f in msg.fields:
            kind = f.message_type.full_name if f.message_type is not None else _scalar(f.type)
            repeated = "repeated " if _is_repeated(f) else ""
            lines.append(f"  {repeated}{kind} {f.name} = {f.number};")
        return "\n".join([*lines, "}"])

    def call(
        self,
        method: str,
        request_json: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 10.0,
    ) -> dict[str, Any]:
        """Calls unary ``method`` (``package.Service/Method`` or ``package.Service.Method``) with a JSON
        request; the reply as a JSON-ready dict (proto3 JSON mapping)."""
        service_name, _, method_name = method.replace("/", ".").rpartition(".")
        if not service_name or not method_name:
            raise InvalidInputError(f"method {method!r} is not of the form package.Service/Method")
        svc = self.service(service_name)
        m = svc.methods_by_name.get(method_name)
        if m is None:
            names = ", ".join(sorted(svc.methods_by_name))
            raise NotFoundError(f"service {service_name} has no method {method_name!r} (it has: {names})")
        if m.client_streaming or m.server_streaming:
            raise InvalidInputError(f"{method} is a streaming method; only unary calls are supported")
        request_cls = message_factory.GetMessageClass(m.input_type)
        reply_cls = message_factory.GetMessageClass(m.output_type)
        try:
            request = json_format.Parse(request_json or "{}", request_cls())
        except json_format.ParseError as exc:
            raise InvalidInputError(f"request is not a valid {m.input_type.full_name}: {exc}") from None
        stub: grpc.UnaryUnaryMultiCallable[Any, Any] = self.channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=lambda msg: msg.SerializeToString(),
            response_deserializer=reply_cls.FromString,
        )
        try:
            reply = stub(request, metadata=tuple(metadata), timeout=timeout)
        except grpc.RpcError as exc:
            raise _error(exc, method) from None
        out: dict[str, Any] = json_format.MessageToDict(reply)
        return out


def _error(exc: grpc.RpcError, what: str) -> Exception:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    message = f"{what}: {code.name if code else 'error'}: {details}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(message)
    if code == grpc.StatusCode.NOT_FOUND or code == grpc.StatusCode.UNIMPLEMENTED:
        return NotFoundError(message)
    return InvalidInputError(message)


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)


def _scalar(type_number: int) -> str:
    from google.protobuf.descriptor import FieldDescriptor as F

    names = {
        F.TYPE_DOUBLE: "double",
        F.TYPE_FLOAT: "float",
        F.TYPE_INT64: "int64",
        F.TYPE_UINT64: "uint64",
        F.TYPE_INT32: "int32",
        F.TYPE_UINT32: "uint32",
        F.TYPE_BOOL: "bool",
        F.TYPE_STRING: "string",
        F.TYPE_BYTES: "bytes",
        F.TYPE_ENUM: "enum",
        F.TYPE_SINT32: "sint32",
        F.TYPE_SINT64: "sint64",
        F.TYPE_FIXED32: "fixed32",
        F.TYPE_FIXED64: "fixed64",
        F.TYPE_SFIXED32: "sfixed32",
        F.TYPE_SFIXED64: "sfixed64",
    }
    return names.get(type_number, f"type{type_number}")


def run(
    address: str, command: str, args: Sequence[str], *, data: str, headers: Sequence[str], tls: bool
) -> int:
    """The ``ofs rpc`` command: prints to standard output, returns the exit status."""
    metadata = []
    for h in headers:
        key, sep, value = h.partition(":")
        if not sep:
            raise InvalidInputError(f"header {h!r} is not of the form name: value")
        metadata.append((key.strip().lower(), value.strip()))
    # Several addresses (or a name resolving to several) are called round-robin, as the Client does.
    with open_channel(address, tls=tls) as channel:
        r = Reflector(channel)
        if command == "list":
            for name in r.services():
                if name != _REFLECTION:
                    print(name)
        elif command == "describe":
            if not args:
                raise InvalidInputError("describe needs a service or message name")
            print(r.describe(args[0]))
        elif command == "call":
            if not args:
                raise InvalidInputError("call needs a method: package.Service/Method")
            print(json.dumps(r.call(args[0], data, metadata=metadata), indent=2))
        else:
            raise InvalidInputError(f"unknown rpc command {command!r}: list, describe or call")
    return 0
