"""The validation report: one row per problem, with file, row/feature, rule, severity, message.

Importers add problems in bulk (vectorised checks give arrays of offending rows); the report
prints a console summary and writes a machine-readable JSON or CSV file.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    file: str
    row: str | None  # 1-based data row for tables, feature id for GIS layers, or None
    rule: str
    severity: str
    message: str


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str | Path, row: object, rule: str, severity: str, message: str) -> None:
        self.problems.append(
            Problem(
                Path(file).name if file else "",
                None if row is None else str(row),
                rule,
                severity,
                message,
            )
        )

    def error(self, file: str | Path, row: object, rule: str, message: str) -> None:
        self.add(file, row, rule, ERROR, message)

    def warning(self, file: str | Path, row: object, rule: str, message: str) -> None:
        self.add(file, row, rule, WARNING, message)

    def add_many(
        self,
        file: str | Path,
        rows: Iterable[object],
        rule: str,
        severity: str,
        messages: Iterable[str] | str,
    ) -> None:
        """One problem per row; ``messages`` is one text for all or one per row."""
        rows = list(rows)
        msgs = [messages] * len(rows) if isinstance(messages, str) else list(messages)
        for r, m in zip(rows, msgs, strict=True):
            self.add(file, r, rule, severity, m)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def failed(self, strict: bool) -> bool:
        return bool(self.errors) or (strict and bool(self.warnings))

    def write(self, path: Path) -> None:
        """JSON (default) or CSV by suffix."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=["file", "row", "rule", "severity", "message"])
                w.writeheader()
                w.writerows(asdict(p) for p in self.problems)
        else:
            body = {
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "problems": [asdict(p) for p in self.problems],
            }
            path.write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")

    def print_summary(self, console: Console, limit: int = 5) -> None:
        """Counts per rule, and the first few problems of each rule with where they are."""
        if not self.problems:
            console.print("[green]no problems found[/]")
            return
        table = Table(title="validation problems", show_lines=False)
        for col in ("severity", "rule", "count", "first occurrences"):
            table.add_column(col)
        by_rule: dict[tuple[str, str], list[Problem]] = {}
        for p in self.problems:
            by_rule.setdefault((p.severity, p.rule), []).append(p)
        for (sev, rule), probs in sorted(by_rule.items()):
            where = "; ".join(
                f"{p.file}{':' + p.row if p.row else ''} {p.message}" for p in probs[:limit]
            )
            style = "red" if sev == ERROR else "yellow"
            table.add_row(f"[{style}]{sev}[/]", rule, str(len(probs)), where)
        console.print(table)
        counts = Counter(p.severity for p in self.problems)
        console.print(f"{counts[ERROR]} error(s), {counts[WARNING]} warning(s)")
