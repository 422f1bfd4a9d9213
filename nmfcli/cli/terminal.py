"""People's output on stderr: progress bar, verbose log lines, summary tables, signals.

rich is imported only when stderr (or stdout, for tables) is a terminal, so pipes and
cron jobs never pay for it and never see colour. stdout is left to data.
"""

from __future__ import annotations

import os
import signal
import sys
import time

VERBOSE_EVERY = 10  # off a terminal, --verbose logs one line per this many iterations
DETAIL_EVERY_S = 0.2  # on a terminal, the bar's objective is read at most this often


def no_color() -> bool:
    """NO_COLOR (https://no-color.org): present and not empty disables colour."""
    return bool(os.environ.get("NO_COLOR"))


def isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class Terminal:
    """Where and how to talk to a person: quiet/verbose flags and whether stderr is a TTY."""

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.tty = isatty(sys.stderr)
        self._console = None

    def console(self, stderr: bool = True):
        from rich.console import Console

        if stderr:
            if self._console is None:
                self._console = Console(file=sys.stderr, no_color=no_color(), highlight=False)
            return self._console
        return Console(file=sys.stdout, no_color=no_color(), highlight=False)

    def say(self, message: str) -> None:
        """One plain line on stderr, unless --quiet."""
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def table(self, title: str, rows, stderr: bool = True) -> None:
        """Key/value rows: a rich table on a terminal, else plain `key: value` lines."""
        stream = sys.stderr if stderr else sys.stdout
        if isatty(stream):
            from rich.table import Table

            t = Table(title=title, show_header=False, title_justify="left")
            t.add_column(style="bold" if not no_color() else None)
            t.add_column()
            for key, value in rows:
                t.add_row(str(key), str(value))
            self.console(stderr).print(t)
        else:
            if title:
                print(title, file=stream)
            for key, value in rows:
                print(f"  {key}: {value}", file=stream)
            stream.flush()


class ProgressDisplay:
    """Renders the core's progress: a rich bar on a TTY, plain lines with --verbose off one.

    ``update(info)`` takes a core.IterationInfo; ``solved(done, total)`` the exact solve's
    rows (or columns) solved, which has no iterations. ``delay_s``: the bar appears only
    once the work has run that long, so quick runs (a small transform) leave no trace.
    """

    def __init__(self, term: Terminal, total: int, label: str, delay_s: float = 0.0, unit: str = "iter"):
        self.term = term
        self.total = total  # the bar's length until an update says otherwise (max_iter, or rows)
        self.unit = unit
        self.label = label
        self.delay_s = delay_s
        self._progress = None
        self._task = None
        self._start = None
        self._logged = 0  # the last tenth of an exact solve logged off a terminal
        self._detail_at = None  # when the bar's objective was last read
        self._last = None  # the last update's info, whose objective the bar shows at the end

    def __enter__(self):
        self._start = time.perf_counter()
        if self.delay_s <= 0:
            self._show()
        return self

    def _show(self):
        if self._progress is None and self.term.tty and not self.term.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[unit]} {task.completed:>5.0f}/{task.total:.0f}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.term.console(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, unit=self.unit,
                                                 detail="objective -  change -" if self.unit == "iter" else "")
        return self._progress

    def _due(self) -> bool:
        return self._progress is not None or time.perf_counter() - self._start >= self.delay_s

    def update(self, info) -> None:
        # The objective is read only when shown (a few times a second on the bar, every
        # VERBOSE_EVERY iterations in the log): on a GPU each read waits for the device.
        if self._due() and self._show() is not None:
            now = time.perf_counter()
            fields = {}
            if self._detail_at is None or now - self._detail_at >= DETAIL_EVERY_S:
                self._detail_at = now
                fields["detail"] = self._detail(info)
            self._last = None if fields else info
            self._progress.update(self._task, completed=info.iteration, total=info.max_iter, **fields)
        elif self.term.verbose and (info.iteration == 1 or info.iteration % VERBOSE_EVERY == 0):
            print(
                f"iteration {info.iteration}/{info.max_iter}  {self._detail(info)}  elapsed {info.elapsed_s:.2f}s",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    def _detail(info) -> str:
        objective = "-" if info.objective is None else f"{info.objective:.6g}"
        change = "-" if info.relative_change is None else f"{info.relative_change:.2e}"
        return f"objective {objective}  change {change}"

    def solved(self, done: int, total: int, what: str = "rows") -> None:
        if self._due() and self._show() is not None:
            self._progress.update(self._task, completed=done, total=total, unit=what, detail="")
        elif self.term.verbose and (done == total or 10 * done // total > self._logged):
            self._logged = 10 * done // total
            print(f"solved {done}/{total} {what}  elapsed {time.perf_counter() - self._start:.2f}s",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._progress is not None:
            if self._last is not None:  # the bar ends on the last iteration's objective
                self._progress.update(self._task, detail=self._detail(self._last))
            self._progress.stop()
        return False


class SignalFlag:
    """While active, SIGINT/SIGTERM only set a flag the fit's callback reads.

    A second SIGINT raises KeyboardInterrupt, for people who really want out now, except
    while :meth:`shielded` (a checkpoint or the outputs being written), when every signal
    only sets the flag: a burst of signals must not kill the checkpoint it asked for.
    """

    def __init__(self):
        self.received = None
        self._old = {}
        self._shielded = 0

    def _handler(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT and not self._shielded:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum

    def shielded(self):
        """Context: no signal interrupts what runs inside (it is only recorded)."""
        flag = self

        class _Shield:
            def __enter__(self):
                flag._shielded += 1

            def __exit__(self, *exc):
                flag._shielded -= 1
                return False

        return _Shield()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received) if self.received is not None else 0


def fit_rows(report: dict) -> list[tuple[str, str]]:
    """The summary table of a fit report."""
    rows = [
        ("k", report["k"]),
        ("shape", " x ".join(str(s) for s in report["shape"])),
        ("solver / loss", f"{report['solver']} / {report['loss']}"),
        *([("converged", "True (one exact solve, no iterations)")] if report["stop_reason"] == "exact" else
          [("iterations", report["n_iter"]), ("converged", f"{report['converged']} ({report['stop_reason']})")]),
        ("objective", f"{report['objective']:.6g}"),
        ("relative error", f"{report['relative_error']:.6g}"),
        *([("missing entries", f"{report['missing_entries']} (left out; the errors are over the others)")]
          if report.get("missing_entries") else []),
        *([("weights", f"{report['weights']['path']} (the loss and errors weighted)")]
          if report.get("weights") else []),
        ("reconstruction error", f"{report['reconstruction_error']:.6g}"),
        ("time", f"{report['time_s']:.2f} s"),
    ]
    return [(k, str(v)) for k, v in rows]
