"""The package's one version: setup.py reads it, save_pretrained records it in config.json (a module of its own,
so that models/pretrained.py need not import the package's __init__, which imports it)."""
__version__ = "0.2.0"
