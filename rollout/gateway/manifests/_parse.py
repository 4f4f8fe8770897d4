"""Reading raw objects with field paths: every complaint names the object and the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from rollout.gateway.constants import ResourceType
from rollout.gateway.errors import MalformedObjectError, UnsupportedObjectError

_M = TypeVar("_M", bound=BaseModel)


# ============================================================================================
# Reading raw objects with field paths
# ============================================================================================

_JSON_TYPE_NAMES: Mapping[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "object"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.replace("-", "").replace("_", "").isalnum():
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"  # annotation keys with '/' and '.'


@dataclass(frozen=True)
class _Ref:
    kind: str
    namespace: str | None
    name: str | None

    def identity(self) -> dict[str, str | None]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


@dataclass(frozen=True)
class _Node:
    """A value inside a raw object, with its path, so every complaint names the field."""

    value: object
    path: str
    ref: _Ref

    def fail(self, detail: str) -> NoReturn:
        raise MalformedObjectError(detail, path=self.path, **self.ref.identity())

    def unsupported(self, detail: str) -> NoReturn:
        raise UnsupportedObjectError(
            f"not representable by this adapter: {detail}", path=self.path, **self.ref.identity()
        )

    def _expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, got {_type_name(self.value)}")

    def mapping(self) -> Mapping[str, object]:
        if not isinstance(self.value, Mapping):
            self._expected("an object")
        return self.value

    def get(self, key: str) -> _Node | None:
        """The child, or None when absent or null (Kubernetes treats both as unset)."""
        value = self.mapping().get(key)
        return None if value is None else _Node(value, _child_path(self.path, key), self.ref)

    def req(self, key: str) -> _Node:
        child = self.get(key)
        if child is None:
            _Node(None, _child_path(self.path, key), self.ref).fail("required field is missing")
        return child

    def string(self) -> str:
        if not isinstance(self.value, str):
            self._expected("a string")
        return self.value

    def integer(self) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            self._expected("an integer")
        return self.value

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            self._expected("an array")
        return [_Node(v, _child_path(self.path, i), self.ref) for i, v in enumerate(self.value)]

    def string_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.mapping().items():
            child = _Node(value, _child_path(self.path, str(key)), self.ref)
            if not isinstance(key, str):
                child.fail(f"expected string keys, got {_type_name(key)}")
            out[key] = child.string()
        return out

    def opt_string(self, key: str) -> str | None:
        child = self.get(key)
        return None if child is None else child.string()

    def opt_integer(self, key: str) -> int | None:
        child = self.get(key)
        return None if child is None else child.integer()

    def exactly_one(self, what: str) -> _Node:
        nodes = self.items()
        if len(nodes) != 1:
            self.unsupported(f"expected exactly one {what}, got {len(nodes)}")
        return nodes[0]


def _root(obj: object, rtype: ResourceType) -> _Node:
    """The top node; reads name/namespace leniently first so even errors about them name them."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    ref = _Ref(
        rtype.kind,
        namespace if isinstance(namespace, str) else None,
        name if isinstance(name, str) else None,
    )
    root = _Node(obj, "", ref)
    root.mapping()
    kind = root.opt_string("kind")
    if kind is not None and kind != rtype.kind:
        root.req("kind").fail(f"expected {rtype.kind!r}, got {kind!r}")
    api_version = root.opt_string("apiVersion")
    if api_version is not None and api_version.partition("/")[0] != rtype.group:
        root.req("apiVersion").fail(f"expected group {rtype.group!r}, got {api_version!r}")
    return root


@dataclass(frozen=True)
class _Meta:
    node: _Node
    name: str
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]


def _read_metadata(root: _Node) -> _Meta:
    meta = root.req("metadata")
    labels = meta.get("labels")
    annotations = meta.get("annotations")
    return _Meta(
        node=meta,
        name=meta.req("name").string(),
        namespace=meta.opt_string("namespace"),
        labels={} if labels is None else labels.string_map(),
        annotations={} if annotations is None else annotations.string_map(),
    )


def _strip_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _construct(
    node: _Node, cls: type[_M], fields: Mapping[str, object], paths: Mapping[str, str]
) -> _M:
    """Validate `fields` into `cls`; a refusal becomes MalformedObjectError at the field's path.

    `paths` maps model field names to their path: relative to `node` when it starts with '.',
    else from the object's root. Model-level refusals are reported at `node`.
    """
    try:
        return cls.model_validate(dict(fields))
    except ValidationError as exc:
        located = [
            (_error_path(node, paths, e["loc"]), _strip_value_error(e["msg"])) for e in exc.errors()
        ]
        path, detail = located[0]
        also = "".join(f"; also {p or 'the object'}: {m}" for p, m in located[1:])
        raise MalformedObjectError(detail + also, path=path, **node.ref.identity()) from None


def _error_path(node: _Node, paths: Mapping[str, str], loc: tuple[int | str, ...]) -> str:
    field_path = paths.get(str(loc[0]), "") if loc else ""
    relative = not field_path or field_path.startswith(".")
    return (f"{node.path}{field_path}" if relative else field_path).lstrip(".")
