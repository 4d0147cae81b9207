"""Per-persona model preference: swap to the persona's model at its room's turn, if RAM allows.

This runs as the scheduler's prepare step, after the previous turn has drained and
before this room's turn is admitted. Nothing is generating then, so ``ModelHost.load``
can pause the scheduler without waiting on the very turn that asked for the swap.
A preference that cannot be met keeps the current model, and the reason is logged once
per (persona, preferred model, loaded model) rather than at every turn.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.model_host import ModelHost
from engine.registry import ModelEntry
from errors import HearthError, ModelError, UserError
from personas import Persona

log = logging.getLogger(__name__)


def _same_file(a: ModelEntry, b: ModelEntry) -> bool:
    return a.name == b.name or a.path.resolve() == b.path.resolve()


class PersonaModels:
    """Decides, before a turn, whether the persona's preferred model should be loaded."""

    def __init__(self, host: ModelHost, enabled: bool = True) -> None:
        self.host = host
        self.enabled = enabled
        self._failed: set[Path] = set()  # loads that failed and were rolled back: not retried
        self._told: set[tuple[str, str, str]] = set()

    async def apply(self, persona: Persona) -> str | None:
        """Swap to ``persona.model`` when it differs from the loaded model and fits in RAM.

        Returns the swap report, or None when the current model stays. Never raises a
        HearthError: a preference is a wish, and the turn runs on whatever is loaded.
        """
        wanted, current = persona.model, self.host.entry
        if not self.enabled or not wanted or current is None or not self.host.loaded:
            return None  # nothing loaded means an operator unloaded it on purpose
        try:
            entry = self.host.registry.resolve(wanted, paths=False)  # cards come from chat
            if _same_file(entry, current):
                return None
            if entry.path.resolve() in self._failed:
                raise ModelError(f"loading {entry.name} failed earlier in this run")
        except HearthError as exc:
            self._keep(persona, wanted, current, exc)
            return None
        try:  # load() refuses a broken file or a RAM shortfall before it touches the current model
            report = await self.host.load(wanted, paths=False)
        except HearthError as exc:
            if not isinstance(exc, UserError):
                self._failed.add(entry.path.resolve())
            self._keep(persona, wanted, self.host.entry or current, exc)
            return None
        log.info("persona %s prefers %s: %s", persona.name, entry.name, report)
        return report

    def _keep(self, persona: Persona, wanted: str, current: ModelEntry, reason: HearthError) -> None:
        key = (persona.name.lower(), wanted.lower(), current.name)
        level = logging.DEBUG if key in self._told else logging.WARNING
        self._told.add(key)
        log.log(level, "persona %s prefers model %s; keeping %s: %s", persona.name, wanted, current.name, reason)
