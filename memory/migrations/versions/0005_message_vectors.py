"""Message embeddings for vector recall (see ``memory.vector_index``).

One row per message and embedding model: the vector as float32 bytes. ``conversation_id`` is
kept beside it so one room's vectors load without a join. Both foreign keys cascade, so a hard
delete of a message (``memory reset``, ``forget-me``) or a room takes its vectors with it.
The SQL is written out here, not imported, so this revision stays what it was.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_vectors",
        sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "conversation_id", sa.Integer, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    # covers the per-room count/max check that runs before every search (no blob is read for it)
    op.create_index(
        "ix_message_vectors_conversation", "message_vectors", ["conversation_id", "model", "message_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_message_vectors_conversation", "message_vectors")
    op.drop_table("message_vectors")
