"""Two helpers for frozen pydantic models on the controller's hot paths.

- `PerObject`: a value derived from a frozen object, computed once per object and kept while
  it lives (a policy's fingerprint, its analysis request). Keyed by id(), since such models
  are not cheaply hashable; each entry is checked by a weak reference and dropped with its
  object, so the memo holds at most the objects alive (a policy reload makes new ones).
- `copy_without_validation`: `model.model_copy(update=changes)` without pydantic's generic
  steps, for models without private attributes or extra keys, whose changes the caller built
  from valid values (a step tick copies its state several times, for thousands of rollouts).
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


__all__ = ["PerObject", "copy_without_validation"]
