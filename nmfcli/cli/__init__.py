"""The `nmf` command: a thin Click skin over nmfcli.core and nmfcli.io.

Every command reads (io), computes (core) and writes or renders (io, terminal).
Errors are translated at one place, :func:`run`: the project's own exceptions become
one ``Error: ...`` line on stderr and their documented exit code; running out of memory
is exit 69; anything else is a bug: exit 70 with one line saying so (NMF_DEBUG=1 prints
the traceback as well).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
import warnings

import click

from nmfcli import __version__, errors

EXIT_CODES_HELP = f"""\b
Exit codes:
  {errors.EXIT_OK:<3}  success
  {errors.EXIT_USAGE:<3}  usage error: unknown option or value, options that do not go together
  {errors.EXIT_NOT_CONVERGED:<3}  --strict and the fit did not converge (outputs are written)
  {errors.EXIT_DATA:<3}  bad data: not a readable non-negative 2-D matrix, mismatched shapes or labels
  {errors.EXIT_NO_INPUT:<3}  an input file does not exist or cannot be opened
  {errors.EXIT_UNAVAILABLE:<3}  not enough memory, or an optional extra (matplotlib, cupy, dask, zarr) is missing
  {errors.EXIT_INTERNAL:<3}  internal error (a bug: rerun with NMF_DEBUG=1 for the traceback and report it)
  {errors.EXIT_CANT_CREATE:<3}  an output exists (use --force) or cannot be created
  {errors.EXIT_IO:<3}  reading or writing failed part-way
  {errors.EXIT_LOCKED:<3}  another nmf run is writing the same output folder
  {errors.EXIT_SIGINT:<3}  interrupted (SIGINT); a fit writes a checkpoint first
  {errors.EXIT_SIGTERM:<3}  terminated (SIGTERM); a fit writes a checkpoint first

\b
Environment:
  NMF_DEBUG=1  print the traceback of an internal error (exit {errors.EXIT_INTERNAL})
  NO_COLOR     no colour on a terminal
"""


# The subcommands and their one-line help. The commands themselves (and numpy, scipy, h5py
# behind them) are imported when one is run or asked for its help, so `nmf --help` and
# `nmf --version` answer at once (0.6 s -> 0.1 s here; most of it was importing scipy).
SHORT_HELP = {
    "fit": "Factor INPUT into non-negative W (m x k) and H (k x n).",
    "transform": "Activations of new rows for fixed components (exact NNLS).",
    "reconstruct": "W·H from W and H files (or a model), and its error.",
    "inspect": "Describe a matrix, a model, a report or a checkpoint.",
    "rank": "Choose k: error and stability of several fits for each k.",
    "convert": "Convert a matrix between formats, labels included.",
}


class _LazyGroup(click.Group):
    """A group whose commands are registered (nmfcli.cli.commands.register) on first use."""

    def list_commands(self, ctx):
        return sorted(SHORT_HELP)

    def get_command(self, ctx, cmd_name):
        if cmd_name in SHORT_HELP and cmd_name not in self.commands:
            from nmfcli.cli import commands

            commands.register(self)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="nmf", message="%(prog)s %(version)s")
def cli():
    """Non-negative matrix factorization X ≈ W·H from the command line.

    \b
    Example: fit 8 topics to a document-term matrix, print them, then
    get the topic mix of new documents with the same vocabulary:
      nmf fit docs.csv -k 8                 # writes docs.nmf/
      nmf inspect docs.nmf/model.h5 --top 10
      nmf transform new.csv --model docs.nmf/model.h5 > mix.csv
    """



def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    _to_devnull(sys.stdout)


def _to_devnull(stream) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# core speaks Python (missing='nan', got chunk_rows, got engine 'dask'); a shell user types options
_PYTHON_ARGUMENT = re.compile(r"\b([a-z][A-Za-z_]*)='([^'\s]*)'")
_PYTHON_WORDS = (("use missing='nan' (nmf fit --missing nan)", "use missing='nan'"),
                 ("; got chunk_rows", "; got --chunk-rows"))
_PYTHON_ENGINE = re.compile(r"; got engine '(\w+)'")


# core's checks of its keyword arguments, which the command line passes under these options
_PYTHON_OPTION = re.compile(r"^(alpha_W|alpha_H|l1_ratio|max_iter|tol) must")


def cli_syntax(message: str) -> str:
    """A core or io message in the command line's words: missing='nan' -> --missing nan,
    alpha_W must ... -> --alpha-W must ..."""
    for python, words in _PYTHON_WORDS:
        message = message.replace(python, words)
    message = _PYTHON_OPTION.sub(lambda m: f"--{m[1].replace('_', '-')} must", message)
    message = _PYTHON_ENGINE.sub(r"; got --engine \1", message)
    return _PYTHON_ARGUMENT.sub(lambda m: f"--{m[1].replace('_', '-')} {m[2]}", message)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """nmfcli's own warnings as one 'warning: ...' line on stderr; others as Python shows them."""
    if issubclass(category, errors.NMFWarning):
        print(f"warning: {_one_line(cli_syntax(str(message)))}", file=sys.stderr, flush=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


class _StdoutFailed(errors.ReadWriteError):
    """Writing to stdout failed (exit 74)."""


class _GuardedStdout:
    """sys.stdout, whose write errors (a full disk, /dev/full, an I/O error) become ReadWriteError
    (exit 74) naming stdout; a reader that went away (BrokenPipeError) is left as it is."""

    def __init__(self, stream):
        self._stream = stream

    def _failed(self, e: OSError) -> errors.ReadWriteError:
        return _StdoutFailed(f"-: writing to stdout failed ({e.strerror or e})")

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def flush(self):
        try:
            return self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _QuietStderr:
    """sys.stderr, whose write errors (`2>/dev/full`) are dropped: there is nowhere left to say
    them, and the exit code still tells."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self):
        try:
            return self._stream.flush()
        except (OSError, ValueError):
            return None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _internal_error(e: BaseException) -> int:
    """A bug: one line that says so, the traceback only with NMF_DEBUG=1."""
    if os.environ.get("NMF_DEBUG", "") not in ("", "0"):
        traceback.print_exception(e, file=sys.stderr)
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [frame for frame in tb if f"{os.sep}nmfcli{os.sep}" in frame.filename]
    if ours or tb:
        frame = (ours or tb)[-1]
        where = f" at {os.path.basename(frame.filename)}:{frame.lineno}"
    print(f"Error: internal error (a bug in nmf): {type(e).__name__}: {_one_line(e)[:300]}{where}; "
          "rerun with NMF_DEBUG=1 for the traceback and please report it", file=sys.stderr)
    return errors.EXIT_INTERNAL


def _out_of_memory(e: MemoryError) -> int:
    detail = f" ({_one_line(e)[:200]})" if str(e) else ""
    print(f"Error: out of memory{detail}; use --dtype float32, sparse input, --chunk-rows or the Dask engine, "
          "or a machine with more memory", file=sys.stderr)
    return errors.EXIT_UNAVAILABLE


def run(argv=None) -> int:
    """Run `nmf` with argv (default sys.argv[1:]) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    if sys.stdout is None:  # started with stdout closed (`nmf ... >&-`): data goes nowhere, quietly
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:  # stderr closed (`2>&-`): messages go nowhere, never into the data on stdout
        sys.stderr = open(os.devnull, "w")
    real_stdout, real_stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _GuardedStdout(real_stdout), _QuietStderr(real_stderr)
    try:
        return _run(args)
    finally:
        sys.stdout, sys.stderr = real_stdout, real_stderr


def _run(args) -> int:
    try:
        try:
            with cli.make_context("nmf", args) as ctx:
                cli.invoke(ctx)
            return errors.EXIT_OK
        finally:
            sys.stdout.flush()
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else e.format_message())
        return errors.EXIT_OK
    except click.UsageError as e:
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        print(f"Error: {_one_line(e.format_message())}{where}", file=sys.stderr)
        return e.exit_code
    except click.ClickException as e:
        print(f"Error: {_one_line(e.format_message())}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        return errors.EXIT_SIGINT
    except errors.NMFError as e:
        print(f"Error: {_one_line(cli_syntax(str(e)))}", file=sys.stderr)
        if isinstance(e, _StdoutFailed):
            _quiet_stdout()  # what is still buffered for stdout goes nowhere, so the exit cannot fail again
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (`nmf ... | head -1`): what it wanted it got.
        _quiet_stdout()
        return errors.EXIT_OK
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return errors.EXIT_SIGINT
    except MemoryError as e:
        return _out_of_memory(e)
    except Exception as e:  # noqa: BLE001 - the one boundary: anything else is a bug
        return _internal_error(e)


def main(argv=None) -> None:
    """Entry point of the `nmf` console script."""
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as e:
        if code == errors.EXIT_OK:
            print(f"Error: -: writing to stdout failed ({e.strerror or e})", file=_QuietStderr(sys.stderr))
            code = errors.EXIT_IO
        _quiet_stdout()
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        _quiet_stderr()
    sys.exit(code)


def _quiet_stderr() -> None:
    """Point stderr at /dev/null so the interpreter's final flush of a full stderr stays quiet."""
    _to_devnull(sys.stderr)
