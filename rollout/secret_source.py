"""Where a secret (a bearer token, a webhook URL) is read from: an environment variable or a
mounted file, never the policy or the settings text. One model for gates, webhook checks and
notifications."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretSource(BaseModel):
    """Where a secret is read from at each use (a rotated secret is used at once): exactly one
    of an environment variable or a file (its content, stripped). Never the secret itself."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    env: StrictStr | None = Field(default=None, description="Environment variable name.")
    file: StrictStr | None = Field(default=None, description="Absolute path of a (mounted) file.")

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("file")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_absolute():
            raise ValueError(f"{value!r} is not an absolute path")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file (a secret is never written inline)")
        return self

    def describe(self) -> str:
        """Where the secret comes from, for messages and logs (never the secret)."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"
