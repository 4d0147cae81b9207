"""Long-term recall: does an old detail reach the prompt when a later question paraphrases it?

A synthetic conversation with four speakers: facts planted early (names, places, numbers,
promises), filler that pushes them out of the window and into the real rolling summary (the
default model writes it), and one question per fact later on, worded without the fact's words.
Each question's prompt is assembled four ways: recall off (today's summary alone), full text,
vectors and hybrid. Then the room grows to 10,000 messages and recall is timed there.

Usage: python -m bench.recall [--turns 400] [--facts 40]
Prints one JSON line: hit_rate {summary, fulltext, vector, hybrid}, recall_ms_p50/p95 (at
10,000 stored messages), recall_tokens_p50/p95, warm_ttft_ratio, warm_ttft_ratio_uncut (the same
without cutting last turn's recalled block out of the cells), warm_ttft_s and warm_ttft_mean_s (each
mode's median and mean), index_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import tempfile
import time
from typing import Any

from bench.common import ROOT, SMOL, require_model
from engine.backend import GenerationRequest
from engine.sampling import SamplingParams
from engine.types import RoomRef

# what a speaker says | the later question that paraphrases it | the detail that must come back
FACT_TABLE = """
My sister Ingrid moved to Lisbon last spring. | Which city does my sibling live in now? | Lisbon
Our dog is called Biscuit, he's a beagle. | What's the name of our pet? | Biscuit
I promised to bring a lemon cake to Saturday's picnic. | What dessert did I say I'd bake for the weekend outing? | lemon
The band rehearses every Thursday in the garage on Elm Street. | Where does the group practice music each week? | Elm
My locker combination is 4719. | What's the code to open my gym cabinet? | 4719
Grandpa Walter turned 92 in March. | How old did my grandfather get this year? | 92
I'm flying to Nairobi on the 14th for a conference. | Where am I travelling by plane for the work meeting? | Nairobi
My favourite painter is Hokusai, especially the wave print. | Which artist do I love most? | Hokusai
Our landlord, Mr. Okafor, raised the rent again. | Who owns the apartment we live in? | Okafor
I parked the van in the Riverside garage, level three. | Which car park did I leave the vehicle in? | Riverside
My daughter Noor is allergic to peanuts. | What food must my child avoid? | peanuts
The wifi password at the cabin is bluefinch88. | What do I type to get online at our holiday lodge? | bluefinch88
Marco owes me 250 euros from the ski trip. | How much money is my friend still in debt to me? | 250
My first car was a green Volvo 240. | What vehicle did I drive as a young person? | Volvo
I'm learning the cello with a teacher named Ottoline. | Who gives me my instrument lessons? | Ottoline
The wedding will be at Castle Drummond on June 8th. | Where is the marriage ceremony taking place? | Drummond
My doctor, Dr. Haverford, retired last week. | Which physician stopped working recently? | Haverford
I keep the spare house key under the blue flowerpot. | Where do I hide the backup for getting into my place? | flowerpot
Our book club is reading Middlemarch this month. | Which novel is our literary circle on now? | Middlemarch
My brother Tobias works as a lighthouse keeper. | What job does my male sibling have? | lighthouse
I ran the Berlin marathon in 3 hours 41 minutes. | What was my finishing time in that long race in Germany? | 41
My cat Pickles only eats salmon. | What fish does my kitty insist on? | salmon
The investors' review is in the Orchid room. | Which space was booked for the shareholder session? | Orchid
I adopted a tortoise named Sheldon from the shelter. | What's my reptile called? | Sheldon
My great-aunt left me a cottage in Connemara. | Where is the little house I inherited? | Connemara
My mother's maiden name is Kowalski. | What was mum's family name before marriage? | Kowalski
I'm allergic to penicillin, found out in hospital. | Which medicine can't I take? | penicillin
We named the sourdough starter Bubbles. | What do we call the bread culture in the fridge? | Bubbles
My flat number is 17B on the fourth floor. | Which unit of the building do I live in? | 17B
Jonas is getting married to Priya in October. | Who is my friend's fiancée? | Priya
The garden shed lock code is 3381. | What are the digits for the padlock out back? | 3381
My boss Henrietta prefers reports in the morning. | Who is my manager at work? | Henrietta
I learned to sail on Lake Geneva as a kid. | Where did I pick up boating when I was young? | Geneva
My phone's wallpaper is a photo of Mount Rainier. | What peak is on my mobile's background picture? | Rainier
The kids' swimming lessons are at the Aquadrome. | Where do the children go for their pool classes? | Aquadrome
Our neighbour Gustav plays the tuba at midnight. | Who next door makes noise late with a brass instrument? | Gustav
My favourite dish is my grandmother's borscht. | What soup do I like best? | borscht
The mechanic quoted 480 dollars for new brakes. | How much will the repair shop charge to fix the car? | 480
I'm saving up for a trip to Patagonia next year. | Where am I putting money aside to visit? | Patagonia
My pen pal Akiko lives in Sapporo. | Where does the friend I write letters to live? | Sapporo
"""
FACTS = [tuple(line.split(" | ")) for line in FACT_TABLE.strip().splitlines()]
SPEAKERS = ["Ann", "Bo", "Cai", "Dee"]
# Small talk where nothing relevant exists: each line names a thing no other line names (until the list
# runs out), in one of a few shapes; about one line in five is a question.
_THINGS = """
trombone kayak pinecone teapot rain-gauge scarecrow hammock snorkel accordion windmill
compass bonsai lantern typewriter sundial birdhouse carousel-ticket telescope unicycle gramophone
boomerang easel quilt metronome periscope terrarium hourglass jukebox tandem sled
canoe-paddle didgeridoo piñata xylophone tambourine mandolin bagpipe trumpet banjo cymbal
abacus anvil barometer chandelier chessboard cuckoo-clock dreamcatcher fountain-pen globe gong
hot-air-balloon igloo jetski kaleidoscope ladle mannequin mosaic nutcracker origami-crane paddleboard
pogo-stick quiver raft rocking-horse saddle sextant slingshot spinning-top stopwatch surfboard
tapestry thimble tiara toboggan totem trampoline tricycle trowel tuba turntable
ukulele valise vase velvet-cushion violin waffle-iron walkie-talkie wheelbarrow whistle wok
yo-yo zeppelin-poster zither armchair bagel-slicer beanbag blender bookend candelabra catapult
chimney-brush coat-rack colander crossbow cufflink dartboard doorknocker dumbbell eggcup fishbowl
flask frisbee gazebo goblet hairdryer harpsichord headlamp ice-skate inkwell jigsaw
keg kettlebell kiln lampshade lasso lute marionette megaphone microscope mitten
monocle mortarboard mousetrap nightlight oar ottoman pinwheel paperweight parasol pendulum
"""
THINGS = _THINGS.split()
SHAPES = [
    "{o}I walked past a {t} on the way here.",
    "{o}my neighbour bought a {t} yesterday.",
    "{o}there was a story about a {t} on the radio.",
    "{o}I dreamt about a {t} last night.",
    "Has anyone here ever owned a {t}?",
]
OPENERS = ["", "Honestly, ", "Anyway, ", "Ha, ", "Well, ", "Okay so ", "Hmm, ", "Oh, "]
REPLIES = [
    "Sounds like quite a day.", "Ha, I can imagine.", "That happens more often than you'd think.",
    "Fair enough!", "I hope it gets better soon.", "Oh no, that's annoying.", "Nice, glad to hear it.",
    "Classic.", "Tell me more if you like.", "That's one way to look at it.", "Good point.",
    "Hang in there.", "I'd have done the same.", "That sounds fun.", "Makes sense to me.",
]
N_CTX = 2048
TARGET_MESSAGES = 10_000
TTFT = SamplingParams(max_tokens=1, temperature=0.0)


def filler(rng: random.Random, index: int) -> str:
    """The ``index``-th small-talk line: a thing of its own, a random shape."""
    thing = THINGS[index % len(THINGS)].replace("-", " ")
    line = rng.choice(SHAPES).format(o=rng.choice(OPENERS), t=thing)
    return line[0].upper() + line[1:]


def schedule(turns: int, facts: int) -> list[tuple[str, int]]:
    """One entry per user turn: ('fact', i), ('question', i) or ('filler', -1).

    Facts go in the first half, questions in the second, each question long after its fact.
    """
    users = turns // 2
    plan: list[tuple[str, int]] = [("filler", -1)] * users
    half = users // 2
    for i in range(facts):
        plan[2 + i * (half - 4) // facts] = ("fact", i)
        plan[half + 2 + i * (users - half - 4) // facts] = ("question", i)
    return plan


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def index_bytes(store: Any) -> int:
    """Bytes of the full-text and vector indexes (SQLite's dbstat, else the stored blobs)."""
    from sqlalchemy import text

    async with store._read() as session:
        try:
            return int(
                await session.scalar(
                    text(
                        "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'messages_fts%'"
                        " OR name IN ('message_vectors', 'ix_message_vectors_conversation')"
                    )
                )
                or 0
            )
        except Exception:  # no dbstat in this SQLite build
            vectors = await session.scalar(text("SELECT sum(length(vector)) FROM message_vectors"))
            blocks = await session.scalar(text("SELECT sum(length(block)) FROM messages_fts_data"))
            return int(vectors or 0) + int(blocks or 0)


async def run(turns: int, facts: int, seed: int = 7) -> dict[str, Any]:
    from bot import App
    from config import HearthConfig

    rng = random.Random(seed)
    facts = min(facts, len(FACTS))
    with tempfile.TemporaryDirectory(prefix="hearth-bench-recall-") as tmp:
        config = HearthConfig.model_validate(
            {
                "model": {"models_dir": str(ROOT / "models"), "n_ctx": N_CTX, "n_threads": 2},
                "database": {"url": f"sqlite+aiosqlite:///{tmp}/hearth.db"},
                "personas": {"dir": f"{tmp}/personas"},
            }
        )
        app = App.build(config)
        await app.start()
        try:
            return await converse(app, turns, facts, rng)
        finally:
            await app.close()


async def converse(app: Any, turns: int, facts: int, rng: random.Random) -> dict[str, Any]:
    conv, store = app.conversation, app.store
    recall = conv.prompts.recall
    backend = app.host.require()
    ref = RoomRef("bench", "recall")
    cid = (await conv.room(ref)).conversation_id
    hits = {"summary": 0, "fulltext": 0, "vector": 0, "hybrid": 0}
    recall_tokens: list[float] = []
    # each turn's prompt and volatile span: recall off, on, and on without cutting last turn's block
    replay: dict[str, list[tuple[list[int], tuple[int, int] | None]]] = {"off": [], "on": [], "on_uncut": []}
    last_prompt = None
    for index, (kind, fact) in enumerate(schedule(turns, facts)):
        speaker = SPEAKERS[(fact if fact >= 0 else index) % len(SPEAKERS)]
        said = FACTS[fact][0] if kind == "fact" else FACTS[fact][1] if kind == "question" else filler(rng, index)
        await store.append(cid, role="user", author_id=speaker.lower(), author_name=speaker, text=said)
        budget = conv.summaries.budget(last_prompt)
        if await conv.summaries.summarizer.needs_work(cid, budget):
            await conv.summaries.summarizer.run(cid, budget)
        await recall.index_all()  # the background indexer's work, done before the turn for a fair count
        turn = await conv.room_turn(ref)
        prompts = {}
        for mode in ("summary", "fulltext", "vector", "hybrid"):
            if kind != "question" and mode in ("fulltext", "vector"):
                continue
            conv.prompts.recall_tokens = 0 if mode == "summary" else recall.tokens
            recall.mode = "hybrid" if mode == "summary" else mode
            prompts[mode] = await conv.prompts.build(backend, turn, speaker, 48)
        conv.prompts.recall_tokens, recall.mode = recall.tokens, "hybrid"
        last_prompt = prompts["hybrid"]
        if kind == "question":
            detail = FACTS[fact][2]
            for mode, prompt in prompts.items():
                hits[mode] += detail in "\n".join(message.content for message in prompt.messages)
        span = prompts["hybrid"].volatile_span  # no lore here: the volatile block is the recalled lines
        recall_tokens.append(span[1] - span[0] if span else 0)
        replay["off"].append((prompts["summary"].tokens, prompts["summary"].volatile_span))
        replay["on"].append((prompts["hybrid"].tokens, prompts["hybrid"].volatile_span))
        replay["on_uncut"].append((prompts["hybrid"].tokens, None))
        answer = {"fact": "Noted!", "question": "Let me think about that."}.get(kind) or rng.choice(REPLIES)
        await store.append(cid, role="assistant", author_id="hearth", author_name="Hearth", text=answer)
    ttft = {key: await warm_ttft(backend, key, prompts) for key, prompts in replay.items()}
    questions = [FACTS[i][1] for i in range(facts)]
    timings = await time_at_scale(store, recall, cid, questions, rng)
    return {
        "hit_rate": {mode: round(count / facts, 3) for mode, count in hits.items()},
        "recall_ms_p50": round(percentile(timings, 0.5), 2),
        "recall_ms_p95": round(percentile(timings, 0.95), 2),
        "recall_tokens_p50": percentile(recall_tokens, 0.5),
        "recall_tokens_p95": percentile(recall_tokens, 0.95),
        "warm_ttft_ratio": round(statistics.median(ttft["on"]) / statistics.median(ttft["off"]), 3),
        "warm_ttft_ratio_uncut": round(statistics.median(ttft["on_uncut"]) / statistics.median(ttft["off"]), 3),
        "warm_ttft_s": {key: round(statistics.median(times), 4) for key, times in ttft.items()},
        "warm_ttft_mean_s": {key: round(statistics.fmean(times), 4) for key, times in ttft.items()},
        "index_mb": round(await index_bytes(store) / 1e6, 2),
    }


async def warm_ttft(backend: Any, key: str, prompts: list[tuple[list[int], tuple[int, int] | None]]) -> list[float]:
    """Each turn's time to first token when the room's prompts follow one another, as in a real room
    (one pass per mode, so no room switch lands in the numbers); the first, cold turn left out.

    With a span, the backend cuts last turn's recalled block out of the cells, as the engine has it
    do; ``on_uncut`` passes none, to measure what the cut saves."""
    times = []
    for index, (tokens, span) in enumerate(prompts):
        reply = backend.stream(GenerationRequest(tokens, TTFT, key, span))
        await reply.text()
        if index:
            times.append(reply.stats.ttft_s)
    return times


async def time_at_scale(store: Any, recall: Any, cid: int, questions: list[str], rng: random.Random) -> list[float]:
    """Grow the room to 10,000 messages, index them, then time each question's recall (ms)."""
    while (count := await store.count_messages(cid)) < TARGET_MESSAGES:
        for _ in range(min(500, TARGET_MESSAGES - count)):
            await store.append(cid, role="user", author_id="ann", author_name="Ann", text=filler(rng, count))
            count += 1
        await recall.index_all()
    in_view = frozenset(message.id for message in await store.messages(cid, last=40))
    timings = []
    for question in questions * 2:
        start = time.perf_counter()
        await recall.search(cid, question, 8, in_view)
        timings.append((time.perf_counter() - start) * 1000)
    return timings[len(questions) :]  # the first round warms the room's vectors in memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--facts", type=int, default=40)
    args = parser.parse_args()
    require_model(SMOL)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(run(max(args.turns, 8 * args.facts), args.facts))))


if __name__ == "__main__":
    main()
