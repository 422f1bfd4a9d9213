"""Exception classes of nmfcli and the exit code each one maps to.

The core and io layers raise these; the CLI turns them into one ``Error: ...``
line on stderr and the exit code below (sysexits where one fits). Each class
also subclasses the builtin exception a Python caller would expect, so
``except ValueError`` keeps working for library users.

This module imports nothing.
"""

EXIT_OK = 0
EXIT_NOT_CONVERGED = 3  # --strict: the fit stopped before converging
EXIT_USAGE = 2  # bad option value or combination (click uses 2 as well)
EXIT_DATA = 65  # EX_DATAERR: the input is not a valid non-negative matrix
EXIT_NO_INPUT = 66  # EX_NOINPUT: the input file does not exist or cannot be opened
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: an optional extra or a resource is missing
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug; the traceback is kept
EXIT_CANT_CREATE = 73  # EX_CANTCREAT: an output cannot be written or already exists
EXIT_IO = 74  # EX_IOERR: reading or writing failed half-way
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock on the output
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class NMFError(Exception):
    """Base class of every error nmfcli reports to a user."""

    exit_code = EXIT_INTERNAL


class UsageError(NMFError, ValueError):
    """An option value or a combination of options is not allowed."""

    exit_code = EXIT_USAGE


class DataError(NMFError, ValueError):
    """The data cannot be factorized as given (negative, NaN, wrong shape, ...)."""

    exit_code = EXIT_DATA


class MissingInputError(NMFError, FileNotFoundError):
    """An input file does not exist or cannot be opened."""

    exit_code = EXIT_NO_INPUT


class UnavailableError(NMFError, RuntimeError):
    """An optional extra is not installed, or a resource (memory, GPU) is too small."""

    exit_code = EXIT_UNAVAILABLE


class OutputError(NMFError, OSError):
    """An output cannot be created, or exists and --force was not given."""

    exit_code = EXIT_CANT_CREATE


class ReadWriteError(NMFError, OSError):
    """An I/O operation failed part-way (disk full, truncated stream, ...)."""

    exit_code = EXIT_IO


class LockedError(NMFError, OSError):
    """Another run holds the lock on the same outputs."""

    exit_code = EXIT_LOCKED


class NotConvergedError(NMFError, RuntimeError):
    """Raised by the CLI under --strict when a fit stopped before converging."""

    exit_code = EXIT_NOT_CONVERGED


class NumericalError(NMFError, ArithmeticError):
    """A computation gave non-finite numbers where the data did not call for them (a bug; nothing is written)."""

    exit_code = EXIT_INTERNAL


class NMFWarning(UserWarning):
    """A fit that runs but will probably disappoint (Python's warnings; the CLI prints one line)."""
