"""Two helpers for frozen pydantic models on the controller's hot paths.

- `PerObject`: a value derived from a frozen object, computed once per object and kept while
  it lives (a policy's fingerprint, its analysis request). Keyed by id(), since such models
  are not cheaply hashable; each entry is checked by a weak reference and dropped with its
  object, so the memo holds at most the objects alive (a policy reload makes new ones).
- `copy_without_validation`: `model.model_copy(update=changes)` without pydantic's generic
  steps, for models without private attributes or extra keys, whose changes the caller built
  from valid values (a step tick copies its state several times, for thousands of rollouts).
- `new_without_validation`: a model built from values the caller checked, every field given.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

_Object = TypeVar("_Object")
_Value = TypeVar("_Value")
_Model = TypeVar("_Model", bound=BaseModel)

_set = object.__setattr__  # past a frozen model's __setattr__, as pydantic's copy does


class PerObject(Generic[_Object, _Value]):
    """`compute(obj)`, once per object while it lives. Thread-safe."""

    def __init__(self, compute: Callable[[_Object], _Value]) -> None:
        self._compute = compute
        self._entries: dict[int, tuple[weakref.ref[Any], _Value]] = {}
        self._lock = threading.Lock()

    def __call__(self, obj: _Object) -> _Value:
        key = id(obj)
        found = self._entries.get(key)
        if found is not None and found[0]() is obj:
            return found[1]
        value = self._compute(obj)

        def forget(ref: weakref.ref[Any]) -> None:
            with self._lock:
                if self._entries.get(key, (None,))[0] is ref:
                    del self._entries[key]

        with self._lock:
            self._entries[key] = (weakref.ref(obj, forget), value)
        return value

    def __contains__(self, key: object) -> bool:
        """Whether the object with this id() has its value kept (for tests)."""
        return key in self._entries


def copy_without_validation(model: _Model, changes: Mapping[str, Any]) -> _Model:
    """`model.model_copy(update=changes)`: a copy is the model's fields with the changes and
    the names of the fields set; a model with extra keys or private attributes goes through
    pydantic's own copy."""
    if model.__pydantic_extra__ or model.__pydantic_private__:
        return model.model_copy(update=changes)
    copied = object.__new__(type(model))
    fields = model.__dict__.copy()
    fields.update(changes)
    _set(copied, "__dict__", fields)
    _set(copied, "__pydantic_extra__", None)
    _set(copied, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(changes))
    _set(copied, "__pydantic_private__", None)
    return copied


_field_names: dict[type[BaseModel], tuple[str, ...]] = {}


def new_without_validation(cls: type[_Model], fields: Mapping[str, Any]) -> _Model:
    """`cls(**fields)` for values the caller checked are of the fields' exact types and within
    their constraints, with every field of `cls` given: what validation would store, without
    its cost (an observation and a decision are made per rollout and tick). A model with
    validators beyond its fields' types must not be built this way."""
    names = _field_names.get(cls)
    if names is None:
        if cls.__private_attributes__ or cls.model_config.get("extra") == "allow":
            raise TypeError(f"{cls.__name__} has private attributes or extra fields")
        names = _field_names[cls] = tuple(cls.model_fields)
    if tuple(fields) != names:
        raise ValueError(f"{cls.__name__}: give every field, in order, not {list(fields)}")
    made = object.__new__(cls)
    _set(made, "__dict__", dict(fields))
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_fields_set__", set(fields))
    _set(made, "__pydantic_private__", None)
    return made


__all__ = ["PerObject", "copy_without_validation", "new_without_validation"]
