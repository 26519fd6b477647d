"""test clocks: advancing_to (bound workflows still catching up with an advance)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("test_clocks", sa.Column("advancing_to", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("test_clocks", "advancing_to")
