"""compact results: result_parts (what results share, by digest) and results.parts_digest

Rows written before this revision keep their full ``to_dict()`` JSON and no digest; the
service reads both forms (cds_service.storage.compact), so the upgrade rewrites nothing
and is quick on a large database. The downgrade writes compact rows back in full form
before it drops the column and the table, so an older service reads every row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 05:10:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "result_parts",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts_digest", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            "fk_results_parts_digest", "result_parts", ["parts_digest"], ["digest"]
        )


def downgrade() -> None:
    from cds_service.storage.compact import full_form

    bind = op.get_bind()
    results = sa.table(
        "results",
        sa.column("id", sa.Integer()),
        sa.column("result", sa.JSON()),
        sa.column("parts_digest", sa.String()),
    )
    parts = sa.table("result_parts", sa.column("digest", sa.String()), sa.column("body", sa.JSON()))
    bodies = {digest: _json(body) for digest, body in bind.execute(sa.select(parts)).all()}
    compact = bind.execute(
        sa.select(results.c.id, results.c.result, results.c.parts_digest).where(
            results.c.parts_digest.is_not(None)
        )
    ).all()
    for row_id, result, digest in compact:
        bind.execute(
            results.update()
            .where(results.c.id == row_id)
            .values(result=full_form(_json(result), bodies.get(digest)))
        )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_constraint("fk_results_parts_digest", type_="foreignkey")
        batch_op.drop_column("parts_digest")
    op.drop_table("result_parts")


def _json(value: object) -> dict[str, object]:
    """A JSON column's value (drivers hand over text or the decoded object)."""
    return json.loads(value) if isinstance(value, str | bytes) else value  # type: ignore[return-value]
