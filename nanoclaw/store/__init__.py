"""The store: SQLite (WAL, migrations) with messages, groups, runs, the outbox, tasks and
pairing codes. `Store` is the one object the rest of the core talks to."""

from nanoclaw.store.messages import Store

__all__ = ["Store"]
