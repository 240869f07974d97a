"""seen_tokens: hook JWTs already accepted, shared by every web process and kept across restarts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seen_tokens",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_seen_tokens_expires_at", "seen_tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_seen_tokens_expires_at", table_name="seen_tokens")
    op.drop_table("seen_tokens")
