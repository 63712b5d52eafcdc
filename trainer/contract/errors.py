"""The user-error hierarchy: failures a user can fix, reported as one clear line.

``python -m trainer`` and ``python -m inference`` catch :class:`TrainstackError`, log its
message (which names what was wrong and what is allowed) and exit non-zero without a
traceback; anything else is a bug and keeps its traceback. Stdlib only: the stack, the
app and the tests import it without torch.
"""

from __future__ import annotations

CONFIG_EXIT = 78
"""The exit status of `python -m trainer` stopped by a ConfigError (sysexits' EX_CONFIG):
a restart fails the same way, so the TrainJob's runtime fails the job at once instead of
restarting it (infra/workloads/trainjob.py). argparse's usage error is one too."""
USAGE_EXIT = 2
CONFIGURATION_EXITS = (USAGE_EXIT, CONFIG_EXIT)


class TrainstackError(Exception):
    """A failure caused by input or environment (config, store, dataset), not a bug."""


class ConfigError(TrainstackError, ValueError):
    """A configuration value is wrong; the message names the key and what is allowed.

    ``key`` is the offending setting when one is known (the stack's config key, a
    TrainConfig field, an environment variable).
    """

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class StoreError(TrainstackError, RuntimeError):
    """A store operation failed in a way the caller should report, not retry."""


class ObjectNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class BucketNotFound(StoreError):
    """A bucket the layout needs does not exist (``python -m trainer buckets`` makes them)."""


class PreconditionFailed(StoreError):
    """A conditional write lost a race: the object changed (or appeared) since it was read."""


class DatasetError(TrainstackError, ValueError):
    """A dataset is missing, malformed or not what was asked for; the message says which."""


class IngestError(DatasetError):
    """An ingest source cannot be fetched or is not the expected file."""


class MetaError(TrainstackError, ValueError):
    """A ``meta.json`` / ``metrics.json`` that does not match the published-version schema."""
