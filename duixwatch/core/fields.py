"""The vocabulary of validated configuration, shared by the config schema and the policy rules.

* :class:`Strict` and :class:`Section`: the base models (unknown keys are errors; a section's
  numbers must be numbers, so YAML ``true`` is not 1);
* field types: :data:`AppId` (a string of digits; an integer only while exact), :data:`Pattern`
  (a name or an :mod:`fnmatch` glob), :func:`label_name` (policy and target names, which become
  metric labels);
* :func:`matches_any`: how ``apps`` / ``exclude_apps`` patterns select an app, by name or id;
* the deferred-checks protocol: a model's rules across its fields run in its own validator when
  it is built in code, and are left to the config loader (which knows every key's line) when
  the validation context carries :data:`DEFER_CROSS_CHECKS`. Such rules return ``(key path,
  message)`` pairs; :func:`raise_problems` turns them into one ``ValueError``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
)

__all__ = [
    "DEFER_CROSS_CHECKS",
    "LABEL_NAME_RE",
    "AppId",
    "DuixId",
    "HeaderName",
    "HeaderValue",
    "Headers",
    "KeyPath",
    "Pattern",
    "Problems",
    "SecretUrl",
    "Section",
    "Strict",
    "app_id",
    "deferred",
    "dotted",
    "header_name",
    "header_value",
    "label_name",
    "matches_any",
    "raise_problems",
    "redact_url",
]

#: A path of keys and list indexes into the config: ``("apps", 0, "app_key")``.
KeyPath = tuple[str | int, ...]
#: What a rule across fields found: ``(key path relative to the model, message)`` pairs.
Problems = list[tuple[KeyPath, str]]

#: Validation context flag: the loader runs the cross-field checks itself, with line numbers.
DEFER_CROSS_CHECKS = "duixwatch_defer_cross_checks"

#: Integers at or above this cannot be represented exactly by a float (JavaScript, yq, jq …).
_EXACT_INT_LIMIT = 2**53
_APP_ID_RE = re.compile(r"^[0-9]{1,32}$")
#: A policy or target name: a metric label value and an audit field.
LABEL_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class Strict(BaseModel):
    """A frozen model whose unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Strict):
    """A config section whose numbers must be numbers: YAML ``true`` is not 1."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if _is_number(annotation):
                raise ValueError("must be a number, not true/false")
        return value


def _is_number(annotation: Any) -> bool:
    """``int``, ``float``, or one of them ``| None``."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(arg in (int, float) for arg in get_args(annotation))
    return False


def app_id(value: Any) -> Any:
    """App ids are 19-digit longs: strings. A YAML/JSON integer is accepted only while exact.

    Pydantic turns ``ValueError`` (not ``TypeError``) into a validation error, hence TRY004.
    """
    if isinstance(value, bool):
        raise ValueError("must be a string of digits")  # noqa: TRY004
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a string of digits")
        if value >= _EXACT_INT_LIMIT:
            raise ValueError(
                f"{value} is written as a number too large to survive tools that read numbers "
                f'as floats; quote it: "{value}"'
            )
        return str(value)
    if isinstance(value, float):
        raise ValueError('must be a string of digits; quote it, e.g. "1377185422953811968"')  # noqa: TRY004
    if isinstance(value, str) and not _APP_ID_RE.fullmatch(value):
        raise ValueError("must be 1 to 32 digits")
    return value


AppId = Annotated[str, BeforeValidator(app_id)]
#: Any DUIX id (conversation, avatar): a string of digits, as app ids are.
DuixId = AppId


def _pattern(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


#: An fnmatch glob (``*``, ``?``, ``[…]``) or a plain name.
Pattern = Annotated[str, AfterValidator(_pattern)]


def label_name(value: str, kind: str) -> str:
    """A policy or target name: it becomes a metric label value and an audit field."""
    if not LABEL_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid {kind} name: 1 to 63 of lower-case letters, digits "
            "and '-', starting with a letter"
        )
    return value


def matches_any(patterns: Iterable[str], name: str, app_id: str) -> bool:
    """Whether an app, by its name or its app_id, matches one of ``patterns`` (fnmatch)."""
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(app_id, pattern)
        for pattern in patterns
    )


def deferred(info: ValidationInfo) -> bool:
    """True when the loader runs the cross-field rules itself (to give them their lines)."""
    return bool(info.context and info.context.get(DEFER_CROSS_CHECKS))


def dotted(path: Sequence[str | int]) -> str:
    """``("apps", 0, "app_key")`` → ``apps[0].app_key``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def raise_problems(problems: Problems) -> None:
    """Raise one ``ValueError`` naming every problem (a model built in code), if there are any."""
    if problems:
        raise ValueError("; ".join(f"{dotted(path)}: {msg}" for path, msg in problems))


# --------------------------------------------------------------------------- HTTP targets
#
# A webhook and a dialog backend are both "a URL and headers that may be secrets": a Slack
# webhook's path is its credential, headers carry bearer tokens. Their validators never quote
# the value, and :func:`redact_url` is the only form of such a URL a log line may show.

#: RFC 9110 ``token``: what an HTTP header name may be made of.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def redact_url(url: str) -> str:
    """``url`` as it may appear in a log line: ``scheme://host[:port]/…``.

    Userinfo, path, query and fragment are dropped: any of them may be the secret.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}/…"


def _secret_url(value: str) -> str:
    message = "must be an http:// or https:// URL with a host"
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError(f"{message}, without spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ValueError(message) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(message)
    return value


def header_name(value: str) -> str:
    """``value`` if it is an HTTP header name (raises ValueError otherwise)."""
    if not _HEADER_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def header_value(value: str) -> str:
    """``value`` if it may be sent as a header value (never quoted: usually a token)."""
    if any(char in value for char in "\r\n\0"):
        raise ValueError("a header value must not contain line breaks or NUL")
    return value


def _distinct_names(value: dict[str, str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for name in value:
        if name.lower() in seen:
            raise ValueError(
                f"{name!r} and {seen[name.lower()]!r} are the same header (names ignore case)"
            )
        seen[name.lower()] = name
    return value


#: An http(s) URL that may hold a credential: never quoted in an error.
SecretUrl = Annotated[str, AfterValidator(_secret_url)]
HeaderName = Annotated[str, AfterValidator(header_name)]
HeaderValue = Annotated[str, AfterValidator(header_value)]
#: Request headers: names distinct ignoring case, values never quoted.
Headers = Annotated[dict[HeaderName, HeaderValue], AfterValidator(_distinct_names)]
