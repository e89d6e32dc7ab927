"""The agent runner: runs inside the sandbox and imports only the standard library.

It is mounted read-only at /runtime/lib/agent and started as the module `agent`; on the
host the same files are `nanoclaw.agent`, so its pure parts are tested directly.
"""
