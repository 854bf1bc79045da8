"""Loading a config file: :func:`load_config`, the one way the daemon, ``check`` and a reload
read configuration, collecting every problem before giving up.

The steps, in order:

1. the file is read, at most :data:`MAX_CONFIG_BYTES` (16 MiB: ``/dev/zero``, a FIFO or a
   huge file stops there, :mod:`~duixwatch.config.files`), and parsed with line numbers for
   every key path (:mod:`~duixwatch.config.yamllines`);
2. ``DUIXWATCH_…`` environment variables are laid over the file's data (:mod:`~duixwatch.
   config.env`, through pydantic-settings): env wins;
3. ``${VAR}`` and ``${VAR:-default}`` in the file's string values are expanded from the
   environment (``$${`` is a literal ``${``); an unset variable is an error, never "";
4. each app's key is resolved: ``app_key`` (usually ``${VAR}``), or ``app_key_file``, or — with
   neither — the systemd credential ``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=``);
5. the schema validates the result (:mod:`~duixwatch.config.schema`; unknown keys are errors);
6. the rules across fields run with line numbers (:mod:`~duixwatch.config.checks`; a config
   built in code gets them from the models' own validators).

Every problem becomes one line ``FILE:LINE: key.path: what is wrong`` — or ``FILE: key.path:
what is wrong (from env DUIXWATCH_X)`` when an environment variable supplied the value — and
all of them are raised together as a :class:`ConfigFileError`. No message, repr or dump ever
holds an appKey: keys are :class:`~pydantic.SecretStr`, messages never quote key values, and
the pydantic and YAML exceptions (whose text may quote input) are never chained. Notification
targets carry secrets too (a webhook URL is a credential, headers hold tokens): messages never
quote them.

Relative paths: ``app_key_file`` is looked up in ``$CREDENTIALS_DIRECTORY`` first, then next to
the config file; ``state.dir`` is relative to the current directory (as a systemd unit's
``WorkingDirectory=``/``StateDirectory=`` usage expects: write ``${STATE_DIRECTORY}`` there).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from duixwatch.config import checks, env, files
from duixwatch.config.paths import pydantic_message
from duixwatch.config.schema import APP_NAME_RE, TOP_LEVEL_KEYS, Config, ScalingTarget, facts
from duixwatch.config.web import load_web_config
from duixwatch.config.yamllines import (
    ConfigFileError,
    Problem,
    YamlSyntaxError,
    gc_paused,
    parse_yaml,
)
from duixwatch.core.fields import (
    DEFER_CROSS_CHECKS,
    LABEL_NAME_RE,
    KeyPath,
    app_id,
    dotted,
    header_name,
    header_value,
)
from duixwatch.policy import kinds
from duixwatch.policy.schema import PolicyConfig

__all__ = ["MAX_CONFIG_BYTES", "ConfigFileError", "load_config"]

#: The largest config file read: 120,000 APPs take 10 MB. A path that never ends
#: (``/dev/zero``, a FIFO) or a huge file stops here instead of filling memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: An appKey is a short token, a headers file a few lines; anything bigger is the wrong file.
_MAX_KEY_FILE_BYTES = 64 * 1024
_MAX_HEADERS_FILE_BYTES = 64 * 1024
#: Stands in for a key that failed to resolve, so validation can report the other problems.
_UNRESOLVED_KEY = "<unresolved>"


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load, expand, override and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values, ``DUIXWATCH_…``
    overrides and ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigFileError` listing every
    problem, one per line.
    """
    loader = _Loader(path, os.environ if environ is None else environ)
    with gc_paused():
        return loader.load()


# --------------------------------------------------------------------------- ${VAR} expansion

_REFERENCE_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


class _ExpansionError(ValueError):
    pass


def _expand(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty); ``$${`` → ``${``.

    Raises :class:`_ExpansionError` naming the variable (never its value).
    """

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "$${":
            return "${"
        if match.group(1) is None:
            raise _ExpansionError("unterminated ${ (write $${ for a literal ${)")
        reference = _VAR_RE.fullmatch(match.group(1))
        if reference is None:
            raise _ExpansionError(
                f"malformed reference {found!r}: use ${{NAME}} or ${{NAME:-default}}"
                " (write $${ for a literal ${)"
            )
        name, default = reference.group(1), reference.group(2)
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise _ExpansionError(f"environment variable {name} is not set (used as ${{{name}}})")
        return value

    if "$" not in text:
        return text
    return _REFERENCE_RE.sub(replace, text)


def _walk_strings(data: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str, Any, str | int]]:
    """Every string value below ``data``: (path, text, container, key in container)."""
    items: Any = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        child = (*path, key)
        if isinstance(value, str):
            yield child, value, data, key
        elif isinstance(value, dict | list):
            yield from _walk_strings(value, child)


class _Loader:
    """One load of one file: its data, line map, env sources and collected problems."""

    def __init__(self, path: str | os.PathLike[str], environ: Mapping[str, str]) -> None:
        self.shown = os.fspath(path)
        self.file = Path(path)
        self.environ = environ
        self.lines: dict[KeyPath, int] = {}
        self.odd_ints: dict[KeyPath, str] = {}
        self.env_sources: dict[KeyPath, str] = {}
        self.problems: list[Problem] = []
        #: Paths that already have a problem: later problems below them are consequences.
        self.failed: set[KeyPath] = set()
        #: The web config's own problems, already ``WEBFILE:LINE: …``.
        self.web_problems: list[str] = []

    # -- problem bookkeeping ----------------------------------------------------------------

    def problem(self, path: KeyPath, message: str, *, covers: bool = True) -> None:
        """Record a problem at ``path``; with ``covers``, later ones below it are dropped."""
        if any(path[: len(bad)] == bad for bad in self.failed):
            return
        self.problems.append(Problem(path, message))
        if path and covers:
            self.failed.add(path)

    def env_problem(self, var: str, message: str) -> None:
        self.problems.append(Problem((), message, env=var))

    def env_source(self, path: KeyPath) -> str | None:
        for cut in range(len(path), 0, -1):
            var = self.env_sources.get(path[:cut])
            if var is not None:
                return var
        return None

    def line(self, path: KeyPath) -> int:
        for cut in range(len(path), 0, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return line
        return 1

    def render(self, problem: Problem) -> tuple[int, str]:
        if problem.env is not None:
            return 1 << 30, f"{self.shown}: {problem.env}: {problem.message}"
        where = dotted(problem.path)
        var = self.env_source(problem.path)
        if var is not None:
            prefix = f"{self.shown}: {where}: " if where else f"{self.shown}: "
            return 1 << 30, f"{prefix}{problem.message} (from env {var})"
        line = self.line(problem.path)
        prefix = f"{self.shown}:{line}: {where}: " if where else f"{self.shown}:{line}: "
        return line, prefix + problem.message

    def fail(self, problems: list[str]) -> ConfigFileError:
        return ConfigFileError(self.shown, problems)

    # -- the steps --------------------------------------------------------------------------

    def load(self) -> Config:
        data = self.read()
        self.overlay_env(data)
        self.expand_references(data)
        if "source" in data:
            self.problem(("source",), "unknown key")
            del data["source"]
        self.resolve_apps(data)
        self.resolve_probes(data)
        self.resolve_web_config(data)
        data["source"] = self.file.absolute()
        config = self.validate(data)
        if config is not None:
            self.check_tls(config)
            self.check_web_config(config)
        found = facts(config) if config is not None else facts_of_data(data)
        for path, message in checks.cross_check(found):
            self.problem(path, message)
        if self.problems or config is None or self.web_problems:
            rendered = sorted((self.render(p) for p in self.problems), key=lambda r: r[0])
            raise self.fail([text for _, text in rendered] + self.web_problems)
        return config

    def read(self) -> dict[str, Any]:
        try:
            raw = files.read_head(self.file, MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self.fail([f"{self.shown}: cannot read the config file: {reason}"]) from None
        if len(raw) > MAX_CONFIG_BYTES:
            line = raw.count(b"\n", 0, MAX_CONFIG_BYTES) + 1
            raise self.fail(
                [
                    f"{self.shown}:{line}: the config file is over the "
                    f"{MAX_CONFIG_BYTES >> 20} MiB limit (reading stopped on this line): "
                    "not a config file"
                ]
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise self.fail([f"{self.shown}: the config file is not UTF-8 text"]) from None
        try:
            data, loader = parse_yaml(text)
        except YamlSyntaxError as exc:
            raise self.fail([f"{self.shown}:{exc.line}: {exc.message}"]) from None
        self.lines = loader.lines
        self.odd_ints = loader.odd_ints
        for found in loader.problems:
            self.problem(found.path, found.message)
        if data is None:
            raise self.fail(
                [f"{self.shown}:1: the config file is empty; it needs at least an `apps:` list"]
            )
        if not isinstance(data, dict):
            raise self.fail(
                [f"{self.shown}:1: the top level must be a mapping of sections (duix:, apps: …)"]
            )
        # A section left empty (every key commented out) means "all defaults".
        for key in TOP_LEVEL_KEYS:
            if key in data and data[key] is None and key != "apps":
                del data[key]
        return data

    def overlay_env(self, data: dict[str, Any]) -> None:
        result = env.overlay(data, self.environ)
        self.env_sources = result.sources
        for found in result.problems:
            if found.env is not None:
                self.env_problem(found.env, found.message)
            else:
                self.problem(found.path, found.message)

    def expand_references(self, data: dict[str, Any]) -> None:
        for path, text, container, key in list(_walk_strings(data, ())):
            if self.env_source(path) is not None:
                continue  # env values are literal
            try:
                container[key] = _expand(text, self.environ)
            except _ExpansionError as exc:
                self.problem(path, str(exc))

    def resolve_apps(self, data: dict[str, Any]) -> None:
        apps = data.get("apps")
        if not isinstance(apps, list):
            return
        for index, app in enumerate(apps):
            if isinstance(app, dict):
                self.resolve_app(app, ("apps", index))

    def resolve_app(self, app: dict[str, Any], path: KeyPath) -> None:
        id_path = (*path, "app_id")
        odd = self.odd_ints.get(id_path)
        if odd is not None and self.env_source(id_path) is None:
            self.problem(
                id_path,
                f'{odd} is read by YAML as the number {app["app_id"]}; quote the id: "{odd}"',
            )
        given_file = app.pop("app_key_file", None)
        has_key = app.get("app_key") is not None
        has_file = given_file is not None
        if has_key and has_file:
            self.problem((*path, "app_key"), "give either app_key or app_key_file, not both")
            app["app_key"] = _UNRESOLVED_KEY
        elif has_key:
            if not isinstance(app["app_key"], str):
                self.problem((*path, "app_key"), "must be a string (quote it)")
                app["app_key"] = _UNRESOLVED_KEY
        elif has_file:
            self.key_from_file(app, path, given_file)
        else:
            self.key_from_credentials(app, path)

    def key_from_file(self, app: dict[str, Any], path: KeyPath, given: Any) -> None:
        key_path = (*path, "app_key_file")
        app["app_key"] = _UNRESOLVED_KEY
        if not isinstance(given, str) or not given.strip():
            self.problem(key_path, "must be a file name")
            return
        chosen, candidates = self.locate(given)
        key = self.read_key(key_path, chosen, tried=candidates)
        if key is not None:
            app["app_key"] = key
            app["app_key_file"] = chosen

    def locate(self, given: str) -> tuple[Path, list[Path]]:
        """A secret file named in the config: as given when absolute, else in
        ``$CREDENTIALS_DIRECTORY`` first, then next to the config file; and the places tried."""
        candidates: list[Path] = []
        requested = Path(given)
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        if requested.is_absolute():
            candidates.append(requested)
        else:
            if credentials:
                candidates.append(Path(credentials) / requested)
            candidates.append(self.file.absolute().parent / requested)
        return next((c for c in candidates if c.exists()), candidates[-1]), candidates

    def key_from_credentials(self, app: dict[str, Any], path: KeyPath) -> None:
        app["app_key"] = _UNRESOLVED_KEY
        name = app.get("name")
        if name is None:
            name = app.get("app_id")
        name = str(name) if isinstance(name, str | int) and not isinstance(name, bool) else ""
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        hint = (
            "set app_key (e.g. ${DUIX_APP_KEY}) or app_key_file, or give the systemd "
            f"credential {name or '<name>'!r} (LoadCredential={name or '<name>'}:/path)"
        )
        if not credentials:
            self.problem(
                path, f"no app key: {hint}; $CREDENTIALS_DIRECTORY is not set", covers=False
            )
            return
        if not APP_NAME_RE.fullmatch(name):
            self.problem(path, f"no app key: {hint}", covers=False)
            return
        candidate = Path(credentials) / name
        if not candidate.exists():
            self.problem(path, f"no app key: {hint}; {candidate} does not exist", covers=False)
            return
        key = self.read_key(path, candidate, tried=[candidate])
        if key is not None:
            app["app_key"] = key
            app["app_key_file"] = candidate

    def read_key(self, path: KeyPath, file: Path, *, tried: list[Path]) -> str | None:
        """The key in ``file``, stripped; ``None`` (with a problem) when unusable."""
        where = f"{file}" if len(tried) == 1 else f"{file} (tried {', '.join(map(str, tried))})"
        try:
            raw = files.read_head(file, _MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            self.problem(
                path, f"cannot read the key file {where}: {exc.strerror or exc}", covers=False
            )
            return None
        if len(raw) > _MAX_KEY_FILE_BYTES:
            self.problem(path, f"the key file {file} is too large to hold an appKey", covers=False)
            return None
        try:
            key = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(path, f"the key file {file} is not UTF-8 text", covers=False)
            return None
        if not key:
            self.problem(path, f"the key file {file} is empty", covers=False)
            return None
        return key

    def resolve_probes(self, data: dict[str, Any]) -> None:
        probes = data.get("dialog_probes")
        for index, probe in enumerate(probes if isinstance(probes, list) else []):
            if not isinstance(probe, dict):
                continue
            path: KeyPath = ("dialog_probes", index)
            tls = probe.get("tls")
            if isinstance(tls, dict):
                for key in ("ca_file", "cert_file", "key_file"):
                    given = tls.get(key)
                    if isinstance(given, str) and given.strip():
                        tls[key] = self.locate(given)[0]
            given = probe.get("headers_file")
            if given is None:
                continue
            if not isinstance(given, str) or not given.strip():
                self.problem((*path, "headers_file"), "must be a file name")
                continue
            chosen, tried = self.locate(given)
            probe["headers_file"] = chosen
            from_file = self.read_headers((*path, "headers_file"), chosen, tried=tried)
            headers = probe.get("headers")
            if not isinstance(headers, dict):
                headers = {} if headers is None else headers
            if isinstance(headers, dict):
                given_names = {str(name).lower() for name in headers}
                for name, value in from_file.items():
                    if name.lower() in given_names:
                        self.problem(
                            (*path, "headers_file"),
                            f"{chosen} sets {name!r}, which headers already sets",
                        )
                    else:
                        headers[name] = value
                probe["headers"] = headers

    def read_headers(self, path: KeyPath, file: Path, *, tried: list[Path]) -> dict[str, str]:
        """``Name: value`` lines of ``file`` (``#`` comments and blank lines skipped). A
        problem names the file's line, never a value."""
        where = f"{file}" if len(tried) == 1 else f"{file} (tried {', '.join(map(str, tried))})"
        try:
            raw = files.read_head(file, _MAX_HEADERS_FILE_BYTES + 1)
        except OSError as exc:
            self.problem(path, f"cannot read the headers file {where}: {exc.strerror or exc}")
            return {}
        if len(raw) > _MAX_HEADERS_FILE_BYTES:
            self.problem(path, f"the headers file {file} is larger than 64 KiB")
            return {}
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.problem(path, f"the headers file {file} is not UTF-8 text")
            return {}
        headers: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, colon, value = line.partition(":")
            name = name.strip()
            if not colon:
                self.problem(path, f"{file}:{number}: expected 'Name: value'")
                continue
            try:
                header_name(name)
                header_value(value)
            except ValueError:
                # Not the validator's message: it quotes the name, which may be a pasted token.
                self.problem(path, f"{file}:{number}: not a valid 'Name: value' header line")
                continue
            if name.lower() in {n.lower() for n in headers}:
                self.problem(path, f"{file}:{number}: {name!r} is set twice")
                continue
            headers[name] = value.strip()
        return headers

    def resolve_web_config(self, data: dict[str, Any]) -> None:
        """A relative ``server.web_config_file`` is relative to this file's directory (from an
        environment variable or ``--web.config.file``: to the current directory)."""
        server = data.get("server")
        if not isinstance(server, dict):
            return
        value = server.get("web_config_file")
        if not isinstance(value, str) or not value:
            return
        if self.env_source(("server", "web_config_file")) is not None:
            server["web_config_file"] = Path(value).absolute()
        else:
            server["web_config_file"] = self.file.absolute().parent / value

    def check_web_config(self, config: Config) -> None:
        """The web config loads, certificates included (its problems name its own lines)."""
        path = config.server.web_config_file
        if path is None:
            return
        try:
            load_web_config(path)
        except ConfigFileError as exc:
            self.web_problems.extend(exc.errors)

    def check_tls(self, config: Config) -> None:
        """Each probe's TLS files load (a bad certificate is a config error, not a probe
        failure at 3 a.m.)."""
        for index, probe in enumerate(config.dialog_probes):
            tls = probe.tls
            if tls.ca_file is None and tls.cert_file is None:
                continue
            try:
                tls.ssl_context()
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                self.problem(("dialog_probes", index, "tls"), f"cannot load: {reason}")

    def validate(self, data: dict[str, Any]) -> Config | None:
        try:
            return Config.model_validate(data, context={DEFER_CROSS_CHECKS: True})
        except ValidationError as exc:
            details = exc.errors(include_input=False, include_url=False)
        # Outside the except block: the ValidationError (whose text quotes the input, keys
        # included) must not become the __context__ of the ConfigFileError raised later.
        for detail in details:
            path: KeyPath = kinds.key_path([part for part in detail["loc"] if part != "[key]"])
            self.problem(path, pydantic_message(detail["type"], detail["msg"], path))
        return None


def facts_of_data(data: Mapping[str, Any]) -> checks.Facts:
    """What the rules across sections can still look at when the whole config does not
    validate: apps and policies valid on their own, the names of the others."""
    apps: list[checks.AppRef] = []
    raw_apps = data.get("apps")
    for index, app in enumerate(raw_apps if isinstance(raw_apps, list) else []):
        if not isinstance(app, dict):
            continue
        try:
            the_id = app_id(app.get("app_id"))
        except ValueError:
            continue
        name = the_id if app.get("name") is None else app["name"]
        if isinstance(the_id, str) and isinstance(name, str) and APP_NAME_RE.fullmatch(name):
            apps.append(checks.AppRef(index, name, the_id))
    policies: list[tuple[int, PolicyConfig]] = []
    policy_names: list[tuple[int, str]] = []
    raw_policies = data.get("policies")
    for index, raw in enumerate(raw_policies if isinstance(raw_policies, list) else []):
        if not isinstance(raw, dict):
            continue
        name = raw.get("name")
        if isinstance(name, str) and LABEL_NAME_RE.fullmatch(name):
            policy_names.append((index, name))
        try:
            policy = PolicyConfig.model_validate(raw, context={DEFER_CROSS_CHECKS: True})
        except ValidationError:
            continue  # reported by the validation of the whole config
        policies.append((index, policy))
    enforcement = data.get("enforcement")
    allow: Any = (
        enforcement.get("allow_close_all", False) if isinstance(enforcement, dict) else False
    )
    try:
        allow_close_all = TypeAdapter(bool).validate_python(allow)
    except ValidationError:
        allow_close_all = False  # reported by validation; the safe reading meanwhile
    targets: list[tuple[int, checks.TargetRef]] = []
    scaling = data.get("scaling")
    raw_targets = scaling.get("targets") if isinstance(scaling, dict) else None
    for index, raw in enumerate(raw_targets if isinstance(raw_targets, list) else []):
        try:
            target = ScalingTarget.model_validate(raw)
        except ValidationError:
            continue  # reported by the validation of the whole config
        targets.append((index, checks.TargetRef(target.name, target.apps)))
    probes = data.get("dialog_probes")
    probe_names = [
        (index, raw["name"])
        for index, raw in enumerate(probes if isinstance(probes, list) else [])
        if isinstance(raw, dict) and isinstance(raw.get("name"), str)
    ]
    return checks.Facts(
        apps=apps,
        policies=policies,
        policy_names=policy_names,
        allow_close_all=allow_close_all,
        targets=targets,
        probe_names=probe_names,
    )
