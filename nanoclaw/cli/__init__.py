"""The `nanoclaw` command: `main` in cli.main (the entry point), one module per command
family. Nothing is imported here, so that a light command stays light."""
