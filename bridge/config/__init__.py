"""Configuration: the typed tree (``model``) and its loader (``load``)."""

from bridge.config.load import load_config, parse_config
from bridge.config.model import BridgeConfig

__all__ = ["BridgeConfig", "load_config", "parse_config"]
