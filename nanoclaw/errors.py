"""The project's own exceptions; library errors are wrapped into these at the boundary.

NanoclawError
 ├── ConfigError          a setting is missing or wrong (start-up stops, exit 2)
 ├── StoreError           the SQLite store cannot be opened or migrated
 ├── SandboxError         bwrap is missing or the sandbox could not start
 ├── IpcRejected          an IPC file is malformed or not authorised (set aside)
 └── DeliveryError        a channel could not deliver a reply (retried)
      └── PermanentDeliveryError   retrying cannot help (chat gone, bot banned)
           └── FilesUnsupported    the network cannot carry files (said in words instead)
"""


class NanoclawError(Exception):
    """Base of every error nanoclaw raises on purpose."""


class ConfigError(NanoclawError):
    """A setting is missing or wrong; the message names it and the fix."""


class StoreError(NanoclawError):
    """The store cannot be opened, migrated or written."""


class SandboxError(NanoclawError):
    """The sandbox could not be built or started."""


class IpcRejected(NanoclawError):
    """An IPC file was refused; the message is the reason recorded in errors/."""


class DeliveryError(NanoclawError):
    """A channel failed to deliver; the router retries with backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Delivery can never succeed; the outbox row is marked failed."""


class FilesUnsupported(PermanentDeliveryError):
    """The channel cannot upload files; the router says so in the chat instead."""


class MediaRefused(Exception):
    """A channel's fetch of an attachment did not get its bytes (refused, too large for the
    platform's API, failed); str() is the reason the prompt shows, in a few words."""
