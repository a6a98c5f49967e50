"""Loading and validating the YAML config into typed objects."""

from opsconsole.config.loader import load_config
from opsconsole.config.model import AppConfig, Config, GroupConfig
from opsconsole.yamlsource import SourceError

__all__ = ["AppConfig", "Config", "GroupConfig", "SourceError", "load_config"]
