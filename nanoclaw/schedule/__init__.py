"""Scheduled tasks: the CLAUDE.md section (claudemd), tasks and their next runs (tasks), the
CLAUDE.md watch (taskfile) and the scheduler that fires due tasks."""
