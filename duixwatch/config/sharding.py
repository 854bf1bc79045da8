"""Sharding: which of the configured apps this replica owns (``sharding:``, README → Sharding).

Replica ``index`` of ``count`` owns the apps whose stable hash — the first 8 bytes of SHA-256 of
the app_id, not Python's per-process ``hash()`` — modulo ``count`` is ``index``. Every replica
computes the same split from the same config, so each app is polled (and acted on) by exactly
one replica. ``index: auto`` takes the index from a StatefulSet pod name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, Self, TypeVar

from pydantic import Field, field_validator, model_validator

from duixwatch.core import errors
from duixwatch.core.fields import Section

__all__ = ["ShardingSettings", "owned_apps", "shard_of"]

_ORDINAL_RE = re.compile(r"-(\d+)$")


class ShardingSettings(Section):
    """Split the apps across replicas: this one owns the apps whose stable hash of the app_id
    modulo ``count`` is ``index``.

    ``index: auto`` takes it from the pod name of a StatefulSet (``duixwatch-2`` → 2), read
    from ``$POD_NAME``, else ``$HOSTNAME``.
    """

    index: int | Literal["auto"] = 0
    count: int = Field(default=1, ge=1, le=1000)

    @field_validator("index")
    @classmethod
    def _not_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more (or auto)")
        return value

    @model_validator(mode="after")
    def _in_range(self) -> Self:
        if isinstance(self.index, int) and self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self

    def resolve(self, environ: Mapping[str, str]) -> int:
        """The index in force (``auto``: the ``-N`` suffix of ``$POD_NAME`` or ``$HOSTNAME``)."""
        if isinstance(self.index, int):
            return self.index
        for variable in ("POD_NAME", "HOSTNAME"):
            name = environ.get(variable, "")
            match = _ORDINAL_RE.search(name)
            if match:
                index = int(match.group(1))
                if index >= self.count:
                    raise errors.ConfigError(
                        f"sharding.index auto: ${variable} {name!r} gives index {index}, "
                        f"not below sharding.count {self.count}"
                    )
                return index
        raise errors.ConfigError(
            "sharding.index auto: neither $POD_NAME nor $HOSTNAME ends in -N (a StatefulSet "
            "pod name); set sharding.index"
        )


class _HasAppId(Protocol):
    @property
    def app_id(self) -> str: ...


_App = TypeVar("_App", bound=_HasAppId)


def shard_of(app_id: str, count: int) -> int:
    """The shard (0 … count-1) that owns ``app_id``, the same in every process and release."""
    digest = hashlib.sha256(app_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def owned_apps(apps: Sequence[_App], *, index: int, count: int) -> tuple[_App, ...]:
    """The apps replica ``index`` of ``count`` polls."""
    return tuple(app for app in apps if shard_of(app.app_id, count) == index)
