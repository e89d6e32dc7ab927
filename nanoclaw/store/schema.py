"""The SQLite schema as an ordered list of migrations; `PRAGMA user_version` says how many ran.

A migration is appended, never edited: an installed store upgrades by running the ones
it has not seen yet, inside one transaction each.
"""

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
)
