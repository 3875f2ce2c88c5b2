"""``docs/reference/grpc.md`` from ``morphtune/service/v1/morphtune.proto``, comments included.

protoc (grpcio-tools, a dev dependency) compiles the proto into a descriptor set with its
source info, so services, RPCs, messages, fields, enums and the comments attached to each
come from the compiler, not from a hand-written parser.
"""

from __future__ import annotations

import importlib.resources
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FieldDescriptorProto,
    FileDescriptorProto,
    FileDescriptorSet,
    SourceCodeInfo,
)

from morphtune._docgen._markdown import escape_tags, slugify, table

__all__ = ["PROTO", "compile_proto", "render_grpc_reference"]

PROTO = "morphtune/service/v1/morphtune.proto"

# Field numbers of FileDescriptorProto / DescriptorProto / ... used in source-info paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE, _FILE_SYNTAX = 4, 5, 6, 12
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD, _ENUM_VALUE = 2, 2

Path_ = tuple[int, ...]


def compile_proto(source_root: Path, proto: str = PROTO) -> FileDescriptorProto:
    """The proto's descriptor with source info (comments), compiled by protoc."""
    from grpc_tools import protoc  # dev dependency: only needed to generate docs

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as temp:
        out = Path(temp) / "descriptor.pb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{source_root}",
                f"-I{well_known}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                str(source_root / proto),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {source_root / proto}")
        descriptors = FileDescriptorSet.FromString(out.read_bytes())
    return descriptors.file[0]


class _Comments:
    def __init__(self, info: SourceCodeInfo) -> None:
        self._by_path = {tuple(location.path): location for location in info.location}

    def leading(self, path: Path_) -> list[str]:
        location = self._by_path.get(path)
        return _paragraphs(location.leading_comments) if location else []

    def trailing(self, path: Path_) -> list[str]:
        location = self._by_path.get(path)
        return _paragraphs(location.trailing_comments) if location else []

    def detached(self, path: Path_) -> list[str]:
        location = self._by_path.get(path)
        if location is None:
            return []
        return [p for block in location.leading_detached_comments for p in _paragraphs(block)]

    def both(self, path: Path_) -> str:
        return " ".join(self.leading(path) + self.trailing(path))


def _paragraphs(comment: str) -> list[str]:
    """A proto comment as Markdown paragraphs (lines joined; blank lines separate)."""
    paragraphs: list[list[str]] = [[]]
    for line in comment.splitlines():
        text = line.strip()
        if text:
            paragraphs[-1].append(text)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [escape_tags(" ".join(lines)) for lines in paragraphs if lines]


def _anchor(kind: str, name: str) -> str:
    return slugify(f"{kind} {name}")


class _Types:
    """Names and links of the file's message and enum types (nested ones dotted)."""

    def __init__(self, proto: FileDescriptorProto) -> None:
        self.package = proto.package
        self.kinds: dict[str, str] = {}
        self.maps: dict[str, DescriptorProto] = {}
        for message, name, _ in _messages(proto.message_type, (), ""):
            full = f".{self.package}.{name}"
            if message.options.map_entry:
                self.maps[full] = message
            else:
                self.kinds[full] = "message"
        for _, name, _ in _enums(proto):
            self.kinds[f".{self.package}.{name}"] = "enum"

    def link(self, type_name: str) -> str:
        kind = self.kinds.get(type_name)
        short = type_name.removeprefix(f".{self.package}.")
        if kind is None:
            return f"`{type_name.lstrip('.')}`"
        return f"[{short}](#{_anchor(kind, short)})"

    def of_field(self, field: FieldDescriptorProto) -> str:
        if field.type_name in self.maps:
            key, value = self.maps[field.type_name].field
            return f"map of {self.of_field(key)} to {self.of_field(value)}"
        if field.type_name:
            base = self.link(field.type_name)
        else:
            base = FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
        if field.label == FieldDescriptorProto.LABEL_REPEATED:
            return f"repeated {base}"
        return f"optional {base}" if field.proto3_optional else base


def _messages(
    messages: Sequence[DescriptorProto], path: Path_, prefix: str
) -> Iterator[tuple[DescriptorProto, str, Path_]]:
    """Every message, nested ones after their parent: (message, dotted name, path)."""
    number = _FILE_MESSAGE if not path else _MESSAGE_NESTED
    for index, message in enumerate(messages):
        here = (*path, number, index)
        name = f"{prefix}{message.name}"
        yield message, name, here
        yield from _messages(message.nested_type, here, f"{name}.")


def _enums(proto: FileDescriptorProto) -> Iterator[tuple[EnumDescriptorProto, str, Path_]]:
    for index, enum in enumerate(proto.enum_type):
        yield enum, enum.name, (_FILE_ENUM, index)
    for message, name, path in _messages(proto.message_type, (), ""):
        for index, enum in enumerate(message.enum_type):
            yield enum, f"{name}.{enum.name}", (*path, _MESSAGE_ENUM, index)


def _service_lines(proto: FileDescriptorProto, comments: _Comments, types: _Types) -> list[str]:
    lines = ["## Services", ""]
    for s_index, service in enumerate(proto.service):
        s_path = (_FILE_SERVICE, s_index)
        lines += [f"### service {service.name}", ""]
        lines += [f"`{proto.package}.{service.name}`", ""]
        for paragraph in comments.leading(s_path):
            lines += [paragraph, ""]
        rows = []
        for m_index, method in enumerate(service.method):
            comment = comments.leading((*s_path, _SERVICE_METHOD, m_index))
            stream_in = "stream " if method.client_streaming else ""
            stream_out = "stream " if method.server_streaming else ""
            rows.append(
                [
                    f"[{method.name}](#{_anchor('rpc', method.name)})",
                    stream_in + types.link(method.input_type),
                    stream_out + types.link(method.output_type),
                    comment[0].split(". ")[0].rstrip(".") + "." if comment else "",
                ]
            )
        lines += table(["RPC", "request", "response", "summary"], rows)
        lines.append("")
        for m_index, method in enumerate(service.method):
            lines += [f"#### rpc {method.name}", ""]
            request = method.input_type.removeprefix(f".{proto.package}.")
            response = method.output_type.removeprefix(f".{proto.package}.")
            stream_in = "stream " if method.client_streaming else ""
            stream_out = "stream " if method.server_streaming else ""
            lines += [
                f"`rpc {method.name}({stream_in}{request}) returns ({stream_out}{response})`",
                "",
                f"Request {types.link(method.input_type)}, response "
                f"{types.link(method.output_type)}"
                + (" (a server stream)." if method.server_streaming else "."),
                "",
            ]
            for paragraph in comments.leading((*s_path, _SERVICE_METHOD, m_index)):
                lines += [paragraph, ""]
    return lines


def _message_lines(proto: FileDescriptorProto, comments: _Comments, types: _Types) -> list[str]:
    lines = ["## Messages", ""]
    for message, name, path in _messages(proto.message_type, (), ""):
        if message.options.map_entry:
            continue
        lines += [f"### message {name}", ""]
        for paragraph in comments.leading(path):
            lines += [paragraph, ""]
        if not message.field:
            lines += ["No fields.", ""]
            continue
        rows = []
        for index, field in enumerate(message.field):
            notes = comments.both((*path, _MESSAGE_FIELD, index))
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = message.oneof_decl[field.oneof_index].name
                notes = f"one of `{oneof}`. {notes}".strip()
            rows.append([f"`{field.name}`", str(field.number), types.of_field(field), notes])
        lines += table(["field", "number", "type", "notes"], rows)
        lines.append("")
    return lines


def _enum_lines(proto: FileDescriptorProto, comments: _Comments) -> list[str]:
    found = list(_enums(proto))
    if not found:
        return []
    lines = ["## Enums", ""]
    for enum, name, path in found:
        lines += [f"### enum {name}", ""]
        for paragraph in comments.leading(path):
            lines += [paragraph, ""]
        rows = [
            [f"`{value.name}`", str(value.number), comments.both((*path, _ENUM_VALUE, index))]
            for index, value in enumerate(enum.value)
        ]
        lines += table(["value", "number", "notes"], rows)
        lines.append("")
    return lines


def render_grpc_reference(proto: FileDescriptorProto, source: str) -> str:
    """The whole ``docs/reference/grpc.md`` for the compiled ``proto`` (``source``: its
    path in the repository, for the reader)."""
    comments = _Comments(proto.source_code_info)
    types = _Types(proto)
    lines = [
        f"# gRPC API reference: `{proto.package}`",
        "",
        "<!-- Generated by `python -m morphtune._docgen` from",
        f"     {source} (comments included). Do not edit by hand. -->",
        "",
        f"Every service, RPC, message and field of [`{source}`](../../{source}), with the",
        "comments written beside them in the proto. How to run the server, authenticate,",
        "page, filter and watch, and which status codes mean what: [../service.md](../service.md).",
        "",
    ]
    header = comments.detached((_FILE_SYNTAX,)) + comments.leading((_FILE_SYNTAX,))
    if header:
        lines += ["From the file's header:", ""]
        lines += "\n>\n".join(f"> {paragraph}" for paragraph in header).splitlines()
        lines.append("")
    lines += _service_lines(proto, comments, types)
    lines += _message_lines(proto, comments, types)
    lines += _enum_lines(proto, comments)
    return "\n".join(lines)
