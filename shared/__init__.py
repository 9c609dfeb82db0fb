"""polymarket-api: the modules behind the HTTP handlers in function_app.py."""

__version__ = "0.1.0"
