"""core war room

Revision ID: dc0a8ad4f3dc
Revises:
Create Date: 2026-11-23 18:31:41.299019
"""
import sqlalchemy as sa
from alembic import op

import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime

revision = 'dc0a8ad4f3dc'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('counter',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counter'))
    )
    # Incident numbers come from this row (UPDATE … RETURNING) so that they have no gaps.
    counter = sa.table('counter', sa.column('name', sa.String), sa.column('value', sa.Integer))
    op.bulk_insert(counter, [{'name': 'incident', 'value': 0}])
    op.create_table('incident',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('severity', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('declared_by', sa.String(length=32), nullable=False),
    sa.Column('declared_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('channel_id', sa.String(length=32), nullable=True),
    sa.Column('channel_name', sa.String(length=80), nullable=True),
    sa.Column('card_ts', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident')),
    sa.UniqueConstraint('channel_id', name=op.f('uq_incident_channel_id')),
    sa.UniqueConstraint('number', name=op.f('uq_incident_number'))
    )
    op.create_table('processed_event',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_processed_event'))
    )
    op.create_table('role_assignment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('assigned_by', sa.String(length=32), nullable=False),
    sa.Column('assigned_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_role_assignment_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_assignment')),
    sa.UniqueConstraint('incident_id', 'role', name=op.f('uq_role_assignment_incident_id_role'))
    )
    op.create_table('timeline_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('actor_id', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('old_value', sa.String(length=80), nullable=True),
    sa.Column('new_value', sa.String(length=80), nullable=True),
    sa.Column('occurred_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('source_ref', sa.String(length=200), nullable=True),
    sa.Column('dedupe_key', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_timeline_entry_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timeline_entry')),
    sa.UniqueConstraint('incident_id', 'dedupe_key', name=op.f('uq_timeline_entry_incident_id_dedupe_key'))
    )
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_timeline_entry_incident_id'), ['incident_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('timeline_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_timeline_entry_incident_id'))

    op.drop_table('timeline_entry')
    op.drop_table('role_assignment')
    op.drop_table('processed_event')
    op.drop_table('incident')
    op.drop_table('counter')
