"""Warming a cast's other characters while the room is idle.

Each character of a cast answers from its own prompt and keeps its own evaluated state
(``room#character``). When Ember speaks after Bram and Sol, her state is three messages
behind, and evaluating them would be paid while the user waits. So after each character's
reply, a background job (which runs only while no reply waits, and yields to one that
arrives) brings every other member's state up to date: it builds that member's prompt as
if it spoke now and evaluates it, generating a single token nobody sees. The next
speaker's turn then evaluates only the user's new message, as in a room with one persona.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from engine.backend import Backend, GenerationRequest, cache_key
from engine.prompting import PromptBuilder, RoomTurn, reply_sampling
from engine.sampling import SamplingParams
from errors import HearthError

log = logging.getLogger(__name__)

WARM_SAMPLING = SamplingParams(max_tokens=1, temperature=0.0)  # evaluate the prompt; the token is dropped


async def warm_cast(
    backend: Backend, prompts: PromptBuilder, turn: RoomTurn, *, room_key: str, last_speaker: str | None, user: str
) -> int:
    """Evaluate the prompt of each member but ``last_speaker`` into its cached state; how many were warmed.

    Cancelling (a reply arrived) stops the member being evaluated at once.
    """
    warmed = 0
    for key, persona in turn.cast:
        if key == last_speaker:
            continue
        reserve = reply_sampling(backend.spec.sampling, persona, turn.settings).max_tokens
        prompt = await prompts.build(backend, replace(turn, persona=persona), user, reserve)
        request = GenerationRequest(prompt.tokens, WARM_SAMPLING, cache_key(room_key, key), prompt.volatile_span)
        stream = backend.stream(request)
        try:
            await stream.text()
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except HearthError as exc:  # the member's own turn will report it, if it recurs
            log.debug("warming %s in %s failed: %s", key, room_key, exc)
            return warmed
        warmed += 1
    return warmed


__all__ = ["WARM_SAMPLING", "warm_cast"]
