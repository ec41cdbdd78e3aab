"""What the operator sees: each step with its outcome and duration, then one summary line per host."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from invoke.exceptions import Exit

from ..commands.credentials import redact

PROGRESS_EVERY = 10.0


class StepFailed(Exit):
    """A step failed on a host: says what, where, and what to do next."""

    def __init__(self, host: str, step: str, reason: str, hint: str = "") -> None:
        message = f"FAILED on {host} at step '{step}': {redact(reason.strip())}"
        if hint:
            message += f"\n  next: {hint}"
        super().__init__(message, code=1)
        self.host, self.step, self.reason, self.hint = host, step, reason, hint


class StepError(Exception):
    """Raised inside a step; the report turns it into `StepFailed` naming host and step."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


@dataclass
class Step:
    name: str
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None

    def took(self, seconds: str | float | None) -> None:
        """The step's own duration, measured where it ran: a part of one remote script, reported after the script ended,
        took this long there, not the instant its report takes here (None: a script from before it said so)."""
        if seconds is not None:
            self.seconds = float(seconds)

    def changed(self, note: str = "") -> None:
        self.status = "changed"
        self.note(note)

    def would_change(self, note: str = "") -> None:
        self.status = "would change"
        self.note(note)

    def note(self, text: str) -> None:
        if text:
            self.notes.append(redact(text))

    def warn(self, text: str) -> None:
        self.notes.append("WARNING: " + redact(text))


class Report:
    """The steps of one task on one host."""

    def __init__(self, task: str, host: str, stream: TextIO | None = None) -> None:
        self.task, self.host = task, host
        self.stream = stream or sys.stdout
        self.steps: list[Step] = []
        self.started = time.monotonic()
        self.print(f"[{host}] {task}")

    def print(self, line: str) -> None:
        self.stream.write(redact(line) + "\n")
        self.stream.flush()

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Run a block as a named step; a `StepError` inside becomes a `StepFailed`."""
        step = Step(name)
        self.steps.append(step)
        started = time.monotonic()
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(name, started, done), daemon=True)
        ticker.start()
        try:
            yield step
        except StepError as err:
            step.status = "FAILED"
            self._line(step, started)
            raise StepFailed(self.host, name, err.reason, err.hint) from None
        except StepFailed:
            step.status = "FAILED"
            self._line(step, started)
            raise
        except Exit as err:
            step.status = "FAILED"
            self._line(step, started)
            raise StepFailed(self.host, name, str(err.message or f"exit status {err.code}")) from None
        except Exception as err:  # noqa: BLE001 (any error becomes a failure naming host and step)
            step.status = "FAILED"
            self._line(step, started)
            raise StepFailed(self.host, name, f"{type(err).__name__}: {err}") from None
        finally:
            done.set()
        self._line(step, started)

    def _tick(self, name: str, started: float, done: threading.Event) -> None:
        while not done.wait(PROGRESS_EVERY):
            self.print(f"  ...          {name}: still running ({time.monotonic() - started:.0f}s)")

    def _line(self, step: Step, started: float) -> None:
        notes = f"  {'; '.join(step.notes)}" if step.notes else ""
        seconds = time.monotonic() - started if step.seconds is None else step.seconds
        self.print(f"  {step.status:<12} {step.name} ({seconds:.2f}s){notes}")

    def count(self, status: str) -> int:
        return sum(1 for s in self.steps if s.status == status)

    def summary(self, result: str = "") -> str:
        counts = [f"{self.count(s)} {s}" for s in ("changed", "would change") if self.count(s)]
        if not counts:
            counts = ["0 changed"]
        line = f"[{self.host}] {self.task}: {result + ', ' if result else ''}{', '.join(counts)}, {len(self.steps)} steps in {time.monotonic() - self.started:.1f}s"
        self.print(line)
        return line
