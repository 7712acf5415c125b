"""threadcast: a realtime comment platform and the Python toolkit behind it."""

__version__ = "0.1.0"
