"""edgegate.yml and policy files: schemas and loading with file:line errors."""

from edgegate.config.load import (LoadedConfig, Limit, ResolvedDevice, load_config, load_policy,
                                  policy_stack, resolve_devices)
from edgegate.config.schema import Config, ModelSpec

__all__ = ["Config", "Limit", "LoadedConfig", "ModelSpec", "ResolvedDevice", "load_config",
           "load_policy", "policy_stack", "resolve_devices"]
