"""The stats topology on Apache Storm: Python bolts spoken to over Storm's multilang protocol."""
