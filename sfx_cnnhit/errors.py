"""Exceptions raised by sfx-cnnhit.

Every error a user can cause derives from :class:`SfxCnnHitError`; the CLI prints its message as one
line (naming the file and what is wrong) and exits non-zero, with a traceback only under ``--debug``.
"""


class SfxCnnHitError(Exception):
    """Base class of all sfx-cnnhit errors meant for the user."""


class InputError(SfxCnnHitError):
    """An input file or dataset cannot be used (missing, corrupt, wrong shape or dtype, ...)."""


class ConfigError(SfxCnnHitError):
    """A configuration file or option is invalid."""


class OutputError(SfxCnnHitError):
    """An output cannot be written (would overwrite an input, not writable, inconsistent resume)."""


class NotAvailableError(SfxCnnHitError):
    """An optional component (DIALS, OM, mpi4py, a model file) is not installed."""
