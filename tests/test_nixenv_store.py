"""A group's `packages` and `profile` in the store: the round trip, and migration 7 on a
store made before it (its groups keep the host runtime)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from nanoclaw.models import Group
from nanoclaw.store import schema
from nanoclaw.store.messages import Store


async def test_packages_and_profile_round_trip(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "nanoclaw.db")
    try:
        group = Group("work", "Work", packages=("ripgrep", "jq"), profile="strict")
        await store.save_group(group)
        assert await store.group("work") == group  # the order given is kept
        cleared = replace(group, packages=(), profile=None)
        await store.save_group(cleared)
        assert (await store.groups())[0] == cleared
    finally:
        await store.close()


async def test_migration_7_on_an_old_store(tmp_path: Path) -> None:
    db = tmp_path / "nanoclaw.db"
    con = sqlite3.connect(db)
    for script in schema.MIGRATIONS[:6]:
        con.executescript(script)
    con.execute("PRAGMA user_version=6")
    con.execute(
        "INSERT INTO groups (folder, name, network, created_ms) VALUES ('old', 'Old', 'full', 1)"
    )
    con.commit()
    con.close()
    store = await Store.open(db)
    try:
        old = await store.group("old")
        assert old == Group("old", "Old", network="full")
        assert old.packages == () and old.profile is None
        await store.save_group(replace(old, packages=("jq",), profile="debug-network"))
        again = await store.group("old")
        assert again is not None and (again.packages, again.profile) == (("jq",), "debug-network")
    finally:
        await store.close()
    version = sqlite3.connect(db).execute("PRAGMA user_version").fetchone()
    assert version == (len(schema.MIGRATIONS),)
