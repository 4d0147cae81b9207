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

from sqlalchemy import TextualSelect, text

from memory.schema import UTCDateTime

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


# One round trip: the hits' rows with, on each, the room's message count (``total``) and each query
# word's count (``cN``). Those subqueries do not depend on the row, so both databases compute them once,
# and only when something matched. Each trip through the async driver adds about half a millisecond,
# and Python work that competes with the question's embedding (the match itself takes 0.1 ms).
_SQLITE_SEARCH = f"""
    SELECT m.id AS id, m.created_at AS created_at, m.author_name AS author_name, m.role AS role,
      m.text AS text{{counts}}
    FROM {FTS_TABLE} JOIN messages AS m ON m.id = {FTS_TABLE}.rowid
    WHERE {FTS_TABLE} MATCH :query AND m.conversation_id = :conversation_id AND NOT m.deleted
    ORDER BY bm25({FTS_TABLE}), m.id DESC
    LIMIT :limit
"""
_POSTGRES_SEARCH = """
    SELECT m.id AS id, m.created_at AS created_at, m.author_name AS author_name, m.role AS role,
      m.text AS text{counts}
    FROM messages AS m, to_tsquery('simple', :query) AS q(query)
    WHERE m.conversation_id = :conversation_id AND NOT m.deleted
      AND to_tsvector('simple', m.text) @@ q.query
    ORDER BY ts_rank(to_tsvector('simple', m.text), q.query) DESC, m.id DESC
    LIMIT :limit
"""
_TOTAL = "SELECT count(*) FROM messages WHERE conversation_id = :conversation_id AND NOT deleted"
# The matching ids first, then one primary-key lookup each: as a JOIN, SQLite's planner walked the
# room's messages and probed the index per row, 340 ms a word at 10,000 messages against 2.4 ms.
_SQLITE_HOLDING = f"""
    SELECT count(*) FROM messages AS m
    WHERE m.id IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :query)
      AND m.conversation_id = :conversation_id AND NOT m.deleted
"""
_POSTGRES_HOLDING = """
    SELECT count(*) FROM messages AS m
    WHERE m.conversation_id = :conversation_id AND NOT m.deleted
      AND to_tsvector('simple', m.text) @@ to_tsquery('simple', :query)
"""


def search_statement(dialect: str, terms: list[str]) -> tuple[TextualSelect, dict[str, str]]:
    """The ranked search for ``dialect`` (best first) and its parameters, but the room and the limit.

    Each row: ``id``, ``created_at``, ``author_name``, ``role``, ``text``, then ``total`` (the room's
    messages) and, for each of ``terms``, ``cN``: how many of them hold it. The words are bound
    parameters, never SQL.
    """
    postgres = dialect == "postgresql"
    quote = tsquery if postgres else fts5_query
    holding = (_POSTGRES_HOLDING if postgres else _SQLITE_HOLDING).strip()
    counts, params = [f"({_TOTAL}) AS total"], {"query": quote(terms)}
    for index, term in enumerate(terms):
        counts.append(f"({holding.replace(':query', f':q{index}')}) AS c{index}")
        params[f"q{index}"] = quote([term])
    sql = (_POSTGRES_SEARCH if postgres else _SQLITE_SEARCH).format(counts="".join(", " + c for c in counts))
    return text(sql).columns(created_at=UTCDateTime), params


__all__ = [
    "FTS_TABLE",
    "SearchHit",
    "coverage",
    "holds",
    "query_terms",
    "rarity",
    "search_statement",
]
