"""search: a search's request; job.search_id / candidate / stopped_reason: its candidates are jobs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("api_key.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_search_owner_id", "search", ["owner_id"])
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("search_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("candidate", sa.String(64), nullable=True))
        batch.add_column(sa.Column("stopped_reason", sa.Text(), nullable=True))
        batch.create_foreign_key("fk_job_search_id", "search", ["search_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_job_search_id", ["search_id"])


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_search_id")
        batch.drop_constraint("fk_job_search_id", type_="foreignkey")
        batch.drop_column("stopped_reason")
        batch.drop_column("candidate")
        batch.drop_column("search_id")
    op.drop_index("ix_search_owner_id", "search")
    op.drop_table("search")
