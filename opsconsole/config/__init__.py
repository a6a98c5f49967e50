"""Loading and validating the YAML config into typed objects: `loader.load_config`, the types in `model`.

This package re-exports nothing (its modules import each other; a package importing them back would
close an import circle). Bad input raises `opsconsole.yamlsource.SourceError`.
"""
