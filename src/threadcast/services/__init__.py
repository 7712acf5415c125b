"""The built-in services: outbox relay, dispatcher, formatter."""
