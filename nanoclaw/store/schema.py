"""The SQLite schema as an ordered list of migrations; `PRAGMA user_version` says how many ran.

A migration is appended, never edited: an installed store upgrades by running the ones
it has not seen yet, inside one transaction each.
"""

import sqlite3
from collections.abc import Iterator

# Milliseconds since the epoch inside a trigger (unixepoch('subsec') needs SQLite 3.42).
SQL_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


def statements(migration: str) -> Iterator[str]:
    """The migration's statements, one by one: a trigger's body holds `;` of its own."""
    pending = ""
    for line in migration.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()


MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE chats (
        chat_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        is_group INTEGER NOT NULL DEFAULT 1,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        sender_name TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        mentions_bot INTEGER NOT NULL DEFAULT 0,
        reply_to_bot INTEGER NOT NULL DEFAULT 0,
        reply_to_sender TEXT NOT NULL DEFAULT '',
        reply_to_text TEXT NOT NULL DEFAULT '',
        UNIQUE (chat_id, platform_id)
    );
    CREATE INDEX messages_chat_id ON messages (chat_id, id);
    CREATE TABLE groups (
        folder TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        trigger TEXT,
        requires_trigger INTEGER NOT NULL DEFAULT 1,
        network TEXT NOT NULL DEFAULT 'off',
        allowed_senders TEXT NOT NULL DEFAULT '[]',
        mounts TEXT NOT NULL DEFAULT '[]',
        exports TEXT NOT NULL DEFAULT '[]',
        model TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE group_chats (
        chat_id TEXT PRIMARY KEY,
        folder TEXT NOT NULL REFERENCES groups (folder) ON DELETE CASCADE
    );
    CREATE TABLE cursors (
        folder TEXT PRIMARY KEY REFERENCES groups (folder) ON DELETE CASCADE,
        message_id INTEGER NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'message',
        status TEXT NOT NULL DEFAULT 'running',
        first_message_id INTEGER,
        last_message_id INTEGER,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        error TEXT NOT NULL DEFAULT '',
        requests INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_folder ON runs (folder, id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        text TEXT NOT NULL,
        run_id INTEGER,
        ipc_name TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        chunks_sent INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        claimed_until_ms INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        sent_ms INTEGER,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_pending ON outbox (status, next_attempt_ms);
    CREATE TABLE ipc_done (
        name TEXT NOT NULL,
        folder TEXT NOT NULL,
        outcome TEXT NOT NULL,
        done_ms INTEGER NOT NULL,
        PRIMARY KEY (folder, name)
    );
    """,
    # 2: scheduled tasks and their run log, CLAUDE.md problems, files in the outbox
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        folder TEXT NOT NULL,
        source TEXT NOT NULL,
        prompt TEXT NOT NULL,
        schedule TEXT NOT NULL,
        context TEXT NOT NULL DEFAULT 'isolated',
        script TEXT,
        catch_up TEXT NOT NULL DEFAULT 'once',
        status TEXT NOT NULL DEFAULT 'active',
        next_run_ms INTEGER,
        last_run_ms INTEGER,
        created_ms INTEGER NOT NULL,
        line INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_due ON tasks (status, next_run_ms);
    CREATE INDEX tasks_folder ON tasks (folder);
    CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        folder TEXT NOT NULL,
        due_ms INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        run_id INTEGER,
        started_ms INTEGER,
        ended_ms INTEGER,
        result TEXT NOT NULL DEFAULT '',
        UNIQUE (task_id, due_ms)
    );
    CREATE INDEX task_runs_status ON task_runs (status, folder, id);
    CREATE TABLE task_problems (
        folder TEXT NOT NULL,
        line INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    ALTER TABLE outbox ADD COLUMN file_path TEXT;
    ALTER TABLE outbox ADD COLUMN file_name TEXT;
    """,
    # 3: the proxy sums a group's usage of the day before each model request
    """
    CREATE INDEX runs_folder_started ON runs (folder, started_ms);
    """,
    # 4: the domains a group under the `allowlist` network policy may reach
    """
    ALTER TABLE groups ADD COLUMN domains TEXT NOT NULL DEFAULT '[]';
    """,
    # 5: provenance: a run whose prompt held messages from senders not allowed to instruct
    # the agent is tainted, and so is a task such a run wrote (SECURITY.md, issue 12)
    """
    ALTER TABLE runs ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: pairing (issue 13): one-time codes `nanoclaw pair` writes and the daemon redeems,
    # the attempts per chat (rate limit), and the notices a chat or sender got (told once)
    """
    CREATE TABLE pair_codes (
        code_hash TEXT PRIMARY KEY,
        folder TEXT NOT NULL REFERENCES groups (folder) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms INTEGER,
        used_chat TEXT NOT NULL DEFAULT '',
        used_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE pair_attempts (
        chat_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL
    );
    CREATE INDEX pair_attempts_chat ON pair_attempts (chat_id, ts_ms);
    CREATE TABLE notices (
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        sent_ms INTEGER NOT NULL,
        PRIMARY KEY (target, kind)
    );
    """,
    # 7: per-group Nix environments (issue 16): nixpkgs attribute names and a built-in profile
    """
    ALTER TABLE groups ADD COLUMN packages TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE groups ADD COLUMN profile TEXT;
    """,
    # 8: the tape (issue 17): every event, searchable (FTS5), pruned after TAPE_RETENTION_DAYS.
    # Triggers write the events whose cause is a row here, in the cause's own commit, so no
    # code path can forget one; `tape_trusted` is ALLOWED_SENDERS, as the daemon last saw it.
    """
    CREATE TABLE tape (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        folder TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        run_id INTEGER,
        chat_id TEXT NOT NULL DEFAULT '',
        ref INTEGER,
        untrusted INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX tape_ts ON tape (ts_ms);
    CREATE INDEX tape_run ON tape (run_id, kind);
    CREATE INDEX tape_ref ON tape (kind, ref);
    CREATE VIRTUAL TABLE tape_fts USING fts5 (text, content='tape', content_rowid='id');
    CREATE TABLE tape_trusted (sender_id TEXT PRIMARY KEY);
    CREATE TRIGGER tape_fts_add AFTER INSERT ON tape BEGIN
        INSERT INTO tape_fts (rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER tape_fts_drop AFTER DELETE ON tape BEGIN
        INSERT INTO tape_fts (tape_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER tape_message AFTER INSERT ON messages BEGIN
        INSERT INTO tape (ts_ms, folder, kind, text, chat_id, ref, untrusted, detail)
        SELECT NOW_MS, g.folder, 'message', new.text, new.chat_id, new.id,
            NOT (new.sender_id = 'term:local'
                OR new.sender_id IN (SELECT sender_id FROM tape_trusted)
                OR new.sender_id IN (SELECT value FROM json_each(g.allowed_senders))),
            json_object('sender', new.sender_id, 'name', new.sender_name)
        FROM group_chats gc JOIN groups g ON g.folder = gc.folder
        WHERE gc.chat_id = new.chat_id;
    END;
    CREATE TRIGGER tape_outbox AFTER UPDATE OF status ON outbox
    WHEN old.status = 'pending' AND new.status IN ('sent', 'failed') BEGIN
        INSERT INTO tape (ts_ms, folder, kind, text, run_id, chat_id, ref, untrusted, detail)
        VALUES (NOW_MS, new.folder, CASE new.status WHEN 'sent' THEN 'reply' ELSE 'error' END,
            CASE new.status WHEN 'failed' THEN 'not delivered (' || new.error || '): ' ELSE '' END
                || coalesce('[file ' || new.file_name || '] ', '') || new.text,
            new.run_id, new.chat_id, new.id,
            coalesce((SELECT tainted FROM runs WHERE id = coalesce(new.run_id, CASE WHEN
                new.ipc_name IS NOT NULL THEN (SELECT max(id) FROM runs WHERE folder = new.folder)
                END)), 0),
            json_object('status', new.status, 'attempts', new.attempts));
    END;
    CREATE TRIGGER tape_run_start AFTER INSERT ON runs BEGIN
        INSERT INTO tape (ts_ms, folder, kind, text, run_id, detail)
        VALUES (NOW_MS, new.folder, 'run_start', new.kind || ' run ' || new.id
                || CASE WHEN new.tainted THEN ' (untrusted senders in its prompt)' ELSE '' END,
            new.id, json_object('kind', new.kind, 'first', new.first_message_id,
                'last', new.last_message_id, 'tainted', new.tainted));
    END;
    CREATE TRIGGER tape_run_end AFTER UPDATE OF ended_ms ON runs
    WHEN old.ended_ms IS NULL AND new.ended_ms IS NOT NULL BEGIN
        INSERT INTO tape (ts_ms, folder, kind, text, run_id, untrusted, detail)
        VALUES (NOW_MS, new.folder, 'run_end', 'run ' || new.id || ' ' || new.status
                || CASE WHEN new.error != '' THEN ': ' || new.error ELSE '' END,
            new.id, new.tainted AND new.error != '',
            json_object('status', new.status, 'ms', new.ended_ms - new.started_ms,
                'requests', new.requests, 'tokens', new.input_tokens + new.output_tokens
                + new.cache_write_tokens));
    END;
    CREATE TRIGGER tape_ipc AFTER INSERT ON ipc_done BEGIN
        INSERT INTO tape (ts_ms, folder, kind, text, run_id, untrusted, detail)
        SELECT NOW_MS, new.folder,
            CASE WHEN new.outcome LIKE 'rejected%' THEN 'refusal' ELSE 'ipc' END,
            new.name || ': ' || new.outcome, r.id, coalesce(r.tainted, 0),
            json_object('name', new.name, 'outcome', new.outcome)
        FROM (SELECT 1) LEFT JOIN runs r
            ON r.id = (SELECT max(id) FROM runs WHERE folder = new.folder);
    END;
    """.replace("NOW_MS", SQL_NOW_MS),
    # 9: the per-group `progress` setting (issue 17, item 2): a progress message edited in place
    """
    ALTER TABLE groups ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: providers, fallbacks and money budgets per group, one row per model call (issue 18);
    # the per-group `vision` switch (issue 19)
    """
    ALTER TABLE groups ADD COLUMN provider TEXT;
    ALTER TABLE groups ADD COLUMN fallback_models TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE groups ADD COLUMN daily_requests INTEGER;
    ALTER TABLE groups ADD COLUMN daily_tokens INTEGER;
    ALTER TABLE groups ADD COLUMN daily_cost REAL;
    ALTER TABLE groups ADD COLUMN vision INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE model_calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        folder TEXT NOT NULL,
        run_id INTEGER,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        fallback INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX model_calls_day ON model_calls (folder, ts_ms);
    CREATE INDEX model_calls_run ON model_calls (run_id);
    """,
    # 11: the images saved with a message, shown to the model (issue 19): written by the host
    # only, so the runner attaches images from this and never from text a user typed
    """
    ALTER TABLE messages ADD COLUMN media TEXT NOT NULL DEFAULT '[]';
    """,
)
