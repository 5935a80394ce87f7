"""update cadence: per-incident due times and the reminder delivery log

Revision ID: 7781a6460941
Revises: dc0a8ad4f3dc
Create Date: 2026-11-23 18:44:40.236033
"""
from alembic import op
import sqlalchemy as sa
import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime


revision = '7781a6460941'
down_revision = 'dc0a8ad4f3dc'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reminder',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('due_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('lease_expires_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('delivered_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('late', sa.Boolean(), nullable=False),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('slack_ts', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_reminder_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder')),
    sa.UniqueConstraint('incident_id', 'kind', 'due_at', name=op.f('uq_reminder_incident_id_kind_due_at'))
    )
    with op.batch_alter_table('reminder', schema=None) as batch_op:
        # Keeps claiming the oldest undelivered reminders an index scan as history grows.
        batch_op.create_index('ix_reminder_undelivered_due_at', ['due_at'], unique=False,
                              postgresql_where=sa.text('delivered_at IS NULL'),
                              sqlite_where=sa.text('delivered_at IS NULL'))

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cadence_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cadence_overridden', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('last_update_at', bot.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('next_update_due_at', bot.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalate_at', bot.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_incident_escalate_at'), ['escalate_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_incident_next_update_due_at'), ['next_update_due_at'], unique=False)

def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_next_update_due_at'))
        batch_op.drop_index(batch_op.f('ix_incident_escalate_at'))
        batch_op.drop_column('escalate_at')
        batch_op.drop_column('next_update_due_at')
        batch_op.drop_column('last_update_at')
        batch_op.drop_column('cadence_overridden')
        batch_op.drop_column('cadence_seconds')

    with op.batch_alter_table('reminder', schema=None) as batch_op:
        batch_op.drop_index('ix_reminder_undelivered_due_at')

    op.drop_table('reminder')
