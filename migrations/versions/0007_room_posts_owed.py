"""room posts owed: a timeline entry remembers that its war-room message is still to be posted

Revision ID: 5b1e0c7a9d42
Revises: e3ef7ccba91d
Create Date: 2026-12-07 00:20:00.000000

Adds a column with a server default, so a rolling deploy is safe: processes of the previous
release keep inserting entries without it (false: nothing owed, as before).
"""
from alembic import op
import sqlalchemy as sa


revision = '5b1e0c7a9d42'
down_revision = 'e3ef7ccba91d'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('awaiting_room_post', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index('ix_timeline_entry_awaiting_room_post', ['recorded_at'], unique=False,
                              postgresql_where=sa.text('awaiting_room_post'),
                              sqlite_where=sa.text('awaiting_room_post = 1'))


def downgrade() -> None:
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_timeline_entry_awaiting_room_post',
                            postgresql_where=sa.text('awaiting_room_post'),
                            sqlite_where=sa.text('awaiting_room_post = 1'))
        batch_op.drop_column('awaiting_room_post')
