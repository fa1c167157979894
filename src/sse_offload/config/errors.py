"""Where a rules file is wrong, and how that is reported: positions, diagnostics, errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class SourcePos:
    """A place in a rules file: 1-based line and column, plus the whole line for display."""

    file: str
    line: int
    col: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error, warning or note about a rules file.

    Notes say something worth knowing that is not a mistake; they never fail ``check``.
    """

    severity: Severity
    pos: SourcePos | None
    message: str

    def format(self) -> str:
        """Return ``file:line:col: severity: message`` followed by the line and a caret."""
        pos = self.pos
        if pos is None:
            return f"{self.severity}: {self.message}"
        if pos.line <= 0:
            return f"{pos.file}: {self.severity}: {self.message}"
        before = pos.text[: max(pos.col - 1, 0)]
        pad = "".join("\t" if c == "\t" else " " for c in before)
        pad += " " * (max(pos.col - 1, 0) - len(before))
        return f"{pos}: {self.severity}: {self.message}\n    {pos.text}\n    {pad}^"


class RulesError(Exception):
    """A rules file that cannot be used.

    ``diagnostics`` holds every error found in the file, in file order; ``warnings`` the
    warnings and notes found on the way (a checker may want to print them too). ``str()``
    is the formatted errors, one after another.
    """

    def __init__(
        self, diagnostics: Iterable[Diagnostic], warnings: Iterable[Diagnostic] = ()
    ) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.warnings: tuple[Diagnostic, ...] = tuple(warnings)
        super().__init__("\n".join(d.format() for d in self.diagnostics))
