"""The database: forums, threads, posts, the outbox and the inbox (SQLAlchemy 2, Alembic)."""
