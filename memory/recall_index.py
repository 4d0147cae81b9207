"""Full-text search over a room's stored messages: what recall and ``memory search`` read.

The index lives in the same database as the messages (migration 0004): on SQLite an FTS5 table
over ``messages.text``, kept in step by triggers, so every write path (append, edit, a hard
delete by ``reset`` or ``forget-me``) updates it inside its own transaction; on PostgreSQL a GIN
index on ``to_tsvector('simple', text)``, which the database maintains itself.

User text never reaches either query language as syntax: it is split into words, common words
are dropped, and each word is quoted as a literal term (OR-ed, so any shared word can match).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import TextClause, text

FTS_TABLE = "messages_fts"
MAX_TERMS = 24  # a 200 KB message as a query must stay a cheap query
_WORD = re.compile(r"\w+")
# Words nearly every message has: they match everything, so they rank nothing.
_COMMON = """a about after again all also am an and any are as at be been before being but by can could did do does
    doing don for from had has have having he her here hers him his how i if in into is it its just me
    my no nor not now of off on once only or our ours out over own said same say says she should so some
    such than that the their theirs them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yes ok okay
    tell told know think remember remind please thanks thank hi hello hey"""
STOPWORDS = frozenset(_COMMON.split())


@dataclass(frozen=True)
class SearchHit:
    """One stored message that matched. ``score`` (0 to 1] is the share of the query's words it holds,
    each word weighted by how rare it is in the room."""

    message_id: int
    created_at: datetime
    speaker: str
    role: str
    text: str
    score: float


def _plain(text: str) -> str:
    """Lower case without diacritics, as FTS5's ``unicode61 remove_diacritics`` compares words."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def query_terms(query: str) -> list[str]:
    """The distinct, uncommon words of ``query``, lower-cased, in order of first appearance."""
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):  # diacritics stay: PostgreSQL's 'simple' keeps them
        word = word.strip("_")
        if len(word) < 2 or word in STOPWORDS or word in terms:
            continue
        terms.append(word)
        if len(terms) == MAX_TERMS:
            break
    return terms


def rarity(messages: int, holding: int) -> float:
    """BM25's inverse document frequency: a word in every message of the room weighs little."""
    return math.log(1 + (messages - holding + 0.5) / (holding + 0.5))


def coverage(weights: dict[str, float], text: str) -> float:
    """The weighted share of the query's words that ``text`` contains: a score that means the same
    on every backend (bm25 and ts_rank depend on the whole table, so they only order hits)."""
    present = set(_WORD.findall(_plain(text)))
    total = sum(weights.values())
    return sum(weight for term, weight in weights.items() if _plain(term) in present) / total if total else 0.0


def holds(term: str, text: str) -> bool:
    """True when ``text`` has ``term`` as a word, compared as the index compares words."""
    return _plain(term) in set(_WORD.findall(_plain(text)))


def fts5_query(terms: list[str]) -> str:
    """An FTS5 MATCH expression: each term a quoted string (never an operator), any of them."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def tsquery(terms: list[str]) -> str:
    """A ``to_tsquery`` expression: each term a quoted lexeme (never an operator), any of them."""
    return " | ".join("'" + term.replace("'", "''").replace("\\", "") + "'" for term in terms)


_SQLITE_SEARCH = text(
    f"""
    SELECT m.id AS id, -bm25({FTS_TABLE}) AS score
    FROM {FTS_TABLE} JOIN messages AS m ON m.id = {FTS_TABLE}.rowid
    WHERE {FTS_TABLE} MATCH :query AND m.conversation_id = :conversation_id AND NOT m.deleted
    ORDER BY bm25({FTS_TABLE}), m.id DESC
    LIMIT :limit
    """
)
_POSTGRES_SEARCH = text(
    """
    SELECT m.id AS id, ts_rank(to_tsvector('simple', m.text), q.query) AS score
    FROM messages AS m, to_tsquery('simple', :query) AS q(query)
    WHERE m.conversation_id = :conversation_id AND NOT m.deleted
      AND to_tsvector('simple', m.text) @@ q.query
    ORDER BY score DESC, m.id DESC
    LIMIT :limit
    """
)


# The matching ids first, then one primary-key lookup each: as a JOIN, SQLite's planner walked the
# room's messages and probed the index per row, 340 ms a word at 10,000 messages against 2.4 ms.
_SQLITE_HOLDING = text(
    f"""
    SELECT count(*) FROM messages AS m
    WHERE m.id IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :query)
      AND m.conversation_id = :conversation_id AND NOT m.deleted
    """
)
_POSTGRES_HOLDING = text(
    """
    SELECT count(*) FROM messages AS m
    WHERE m.conversation_id = :conversation_id AND NOT m.deleted
      AND to_tsvector('simple', m.text) @@ to_tsquery('simple', :query)
    """
)


def search_statement(dialect: str, terms: list[str]) -> tuple[TextClause, str]:
    """The ranked search for ``dialect`` and its query parameter (ids and scores, best first)."""
    if dialect == "postgresql":
        return _POSTGRES_SEARCH, tsquery(terms)
    return _SQLITE_SEARCH, fts5_query(terms)


def holding_counts_statement(dialect: str, terms: list[str]) -> tuple[TextClause, dict[str, str]]:
    """One row: for each of ``terms`` (column ``cN``), how many of a room's messages hold it.

    One round trip instead of one per word: each trip through the async driver costs about a
    millisecond, and a question has up to ``MAX_TERMS`` words. The words are bound parameters.
    """
    template = _POSTGRES_HOLDING if dialect == "postgresql" else _SQLITE_HOLDING
    counts, params = [], {}
    for index, term in enumerate(terms):
        inner = template.text.strip().replace(":query", f":q{index}")
        counts.append(f"({inner}) AS c{index}")
        params[f"q{index}"] = tsquery([term]) if dialect == "postgresql" else fts5_query([term])
    return text("SELECT " + ", ".join(counts)), params


__all__ = [
    "FTS_TABLE",
    "SearchHit",
    "coverage",
    "holding_counts_statement",
    "holds",
    "query_terms",
    "rarity",
    "search_statement",
]
