"""The alert record every condition returns and the notifier sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["info", "warning", "failure"]  # apprise's notification types of the same names


@dataclass(frozen=True)
class Alert:
    """One condition that holds now.

    `key` names the condition (the same condition has the same key each time it is evaluated);
    `level` is how far it went (a budget's 50/80/100 %): the notifier sends an alert once per
    key and level, and again only after the condition cleared or its level changed.
    """

    key: str
    level: str
    severity: Severity
    title: str
    body: str
    command: str  # what to run to look further
    details: dict = field(default_factory=dict, compare=False)  # machine-readable facts, for the JSON payload

    @property
    def text(self) -> str:
        return f"{self.body}\nLook further: {self.command}"

    def payload(self) -> dict:
        """The JSON the webhook and the command receive."""
        return {"event": f"civicflow.{self.key.split(':', 1)[0]}", "key": self.key, "level": self.level, "severity": self.severity,
                "title": self.title, "message": self.body, "command": self.command, **self.details}
