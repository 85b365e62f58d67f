"""artifact.meta: what the API read from an upload (model input/output shapes, dataset shapes and labels)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 02:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifact") as batch:
        batch.add_column(sa.Column("meta", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifact") as batch:
        batch.drop_column("meta")
