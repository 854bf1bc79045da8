"""Configuration: the config file, its environment overrides, secrets and validation.

One way to load it, :func:`load_config`, used by the daemon, ``duixwatch check`` and every
reload; the modules, in the order a load goes through them:

* :mod:`~duixwatch.config.files` — every file it names read boundedly (size, pipes);
* :mod:`~duixwatch.config.yamllines` — YAML with the line of every key;
* :mod:`~duixwatch.config.env` — ``DUIXWATCH_…`` variables, through pydantic-settings;
* :mod:`~duixwatch.config.loader` — ``${VAR}``, app keys, validation, FILE:LINE errors;
* :mod:`~duixwatch.config.schema` — every section (a policy's is
  :mod:`duixwatch.policy.schema`'s) and :class:`Config`; :mod:`~duixwatch.config.sharding`;
* :mod:`~duixwatch.config.checks` — the rules across sections;
* :mod:`~duixwatch.config.masking` — the effective config with its secrets masked.

The names below are the package's public face::

    cfg = config.load_config("duixwatch.yaml")          # environ defaults to os.environ
    config.mask(cfg)                                    # JSON-able, secrets replaced
"""

from duixwatch.config.loader import MAX_CONFIG_BYTES, ConfigFileError, load_config
from duixwatch.config.masking import MASK, mask
from duixwatch.config.schema import (
    DEFAULT_BASE_URL,
    DEFAULT_LISTEN,
    AppConfig,
    Config,
    DaemonSettings,
    DuixPaths,
    DuixSettings,
    EnforcementSettings,
    ScalingSettings,
    ScalingTarget,
    ServerSettings,
    SessionListMapping,
    StateSettings,
    split_listen,
)
from duixwatch.config.sharding import ShardingSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LISTEN",
    "MASK",
    "MAX_CONFIG_BYTES",
    "AppConfig",
    "Config",
    "ConfigFileError",
    "DaemonSettings",
    "DuixPaths",
    "DuixSettings",
    "EnforcementSettings",
    "ScalingSettings",
    "ScalingTarget",
    "ServerSettings",
    "SessionListMapping",
    "ShardingSettings",
    "StateSettings",
    "load_config",
    "mask",
    "split_listen",
]
