"""Rolling summaries, engine side: when a room needs one, and the model call that writes it.

``memory.summarizer`` holds the policy (what to fold, how long a summary may be) and knows
no model; this module gives it the loaded model as its token counter and writer, and
queues compactions on the scheduler at low priority, so a reply always pre-empts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.backend import Backend, GenerationRequest
from engine.chat_template import ChatMessage
from engine.context import AssembledPrompt
from engine.recall import recall_budget
from engine.sampling import SamplingParams
from engine.settings import MemorySettings
from memory import MemoryStore
from memory.summarizer import Summarizer, message_line

if TYPE_CHECKING:
    from engine.model_host import ModelHost
    from engine.scheduler import Scheduler

SUMMARY_SYSTEM = "You write short, factual summaries of chat logs."


def history_budget(backend: Backend, last_prompt: AssembledPrompt | None, recall_tokens: int = 0) -> int:
    """Tokens the recent turns may use: the window minus the reply reserve, the fixed prompt and
    the recall budget (held back on every turn, see ``engine.prompting``)."""
    fixed = 0
    if last_prompt is not None and last_prompt.messages and last_prompt.messages[0].role == "system":
        fixed = len(backend.tokenize(backend.render(last_prompt.messages[:1], add_generation_prompt=False)))
    room = backend.spec.options.n_ctx - backend.spec.sampling.max_tokens
    return max(room - fixed - recall_budget(recall_tokens, room), 64)


async def write_summary(backend: Backend, previous: str, messages: Sequence, max_tokens: int) -> str:
    """Ask the model for an updated summary; cancelled cleanly if a reply pre-empts it."""
    lines = "\n".join(message_line(m) for m in messages)
    words = max(max_tokens * 2 // 3, 20)
    room = backend.spec.options.n_ctx - max_tokens
    while True:
        request = (
            (f"Summary so far:\n{previous}\n\n" if previous else "")
            + f"New conversation lines:\n{lines}\n\n"
            + f"Write an updated summary of the whole conversation in at most {words} words. "
            "Keep names, facts, promises and decisions."
        )
        prompt = [ChatMessage("system", SUMMARY_SYSTEM), ChatMessage("user", request)]
        tokens = backend.tokenize(backend.render(prompt))
        if len(tokens) <= room or len(lines) < 16:
            break
        lines = lines[len(lines) // 4 :]  # an oversized chunk: keep its newest part
    sampling = SamplingParams(temperature=0.3, max_tokens=max_tokens, repeat_penalty=1.15)
    stream = backend.stream(GenerationRequest(tokens, sampling, None))
    try:
        return (await stream.text()).strip()
    except asyncio.CancelledError:
        stream.cancel()
        raise


class Summaries:
    """Compacts rooms' histories with whatever model is loaded when the compaction runs."""

    def __init__(self, store: MemoryStore, host: ModelHost, scheduler: Scheduler, settings: MemorySettings) -> None:
        self.host = host
        self.scheduler = scheduler
        self.recall_tokens = settings.recall_tokens
        self.summarizer = Summarizer(
            store,
            count_tokens=lambda text: self.host.require().count_text_tokens(text),
            write_summary=lambda previous, messages, max_tokens: write_summary(
                self.host.require(), previous, messages, max_tokens
            ),
            summarize_at=settings.summarize_at,
            keep_recent=settings.keep_recent_turns,
            max_tokens=settings.summary_max_tokens,
        )

    def budget(self, last_prompt: AssembledPrompt | None) -> int:
        """The room's history budget under the loaded model (see ``history_budget``)."""
        return history_budget(self.host.require(), last_prompt, self.recall_tokens)

    async def compact_now(self, conversation_id: int, last_prompt: AssembledPrompt | None) -> bool:
        """Fold the room's older turns into its summary now (``memory summarize``)."""
        return await self.summarizer.run(conversation_id, self.budget(last_prompt), force=True)

    async def schedule(
        self,
        conversation_id: int,
        room_key: str,
        last_prompt: Callable[[], AssembledPrompt | None],
        force: bool = False,
    ) -> None:
        """Queue a low-priority compaction if the room needs one (or ``force``).

        ``last_prompt`` is read again when the job runs: the room may have had turns meanwhile.
        """
        if not force and not await self.summarizer.needs_work(conversation_id, self.budget(last_prompt())):
            return

        async def compact() -> None:
            if await self.summarizer.run(conversation_id, self.budget(last_prompt()), force=force):
                self.host.require().invalidate_room(room_key)  # its prefix changed with the summary

        self.scheduler.background(f"summary:{room_key}", compact)
