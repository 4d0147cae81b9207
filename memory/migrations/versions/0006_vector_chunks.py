"""Several vectors per message: a long message is embedded in overlapping chunks.

The embedder reads 512 tokens at most, so a pasted document was recalled only by its
beginning. Each row is now one chunk: ``chunk`` is its number within the message and
``start`` the character offset where its text begins, so recall can show the part that
matched. Existing vectors become chunk 0 of their message, starting at 0; nothing is
embedded again. The table is rebuilt (copy, drop, rename), which SQLite needs to change a
primary key, and PostgreSQL does the same way. The SQL is written out here, not imported.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_message_vectors_conversation"


def _table(name: str, *, chunked: bool) -> None:
    message = sa.ForeignKey("messages.id", ondelete="CASCADE")
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("message_id", sa.Integer, message, nullable=False, autoincrement=False),
        sa.Column(
            "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    ]
    if chunked:
        columns[1:1] = [sa.Column("chunk", sa.Integer, nullable=False), sa.Column("start", sa.Integer, nullable=False)]
        op.create_table(name, *columns, sa.PrimaryKeyConstraint("message_id", "chunk", name=f"pk_{name}"))
    else:
        op.create_table(name, *columns, sa.PrimaryKeyConstraint("message_id", name=f"pk_{name}"))


def _swap(new: str, copy: str) -> None:
    op.execute(copy)
    op.drop_index(INDEX, "message_vectors")
    op.drop_table("message_vectors")
    op.rename_table(new, "message_vectors")
    # covers the per-room count/max check that runs before every search (no blob is read for it)
    op.create_index(INDEX, "message_vectors", ["conversation_id", "model", "message_id"])


def upgrade() -> None:
    _table("message_vectors_chunked", chunked=True)
    _swap(
        "message_vectors_chunked",
        "INSERT INTO message_vectors_chunked (message_id, chunk, start, conversation_id, model, vector)"
        " SELECT message_id, 0, 0, conversation_id, model, vector FROM message_vectors",
    )


def downgrade() -> None:
    _table("message_vectors_whole", chunked=False)
    _swap(
        "message_vectors_whole",
        "INSERT INTO message_vectors_whole (message_id, conversation_id, model, vector)"
        " SELECT message_id, conversation_id, model, vector FROM message_vectors WHERE chunk = 0",
    )
