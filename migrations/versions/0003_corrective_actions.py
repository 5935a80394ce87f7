"""corrective actions (CAPA), their reminders, and the impact-start / detected marks

Revision ID: 6d76b29864bf
Revises: 7781a6460941
Create Date: 2026-11-23 21:09:54.410126
"""
from alembic import op
import sqlalchemy as sa
import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime


revision = '6d76b29864bf'
down_revision = '7781a6460941'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('corrective_action',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('owner_id', sa.String(length=32), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('verification', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=32), nullable=False),
    sa.Column('created_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('remind_before_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('remind_due_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('done_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('done_by', sa.String(length=32), nullable=True),
    sa.Column('verified_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('verified_by', sa.String(length=32), nullable=True),
    sa.Column('verified_evidence', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_corrective_action_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_corrective_action')),
    sa.UniqueConstraint('incident_id', 'number', name=op.f('uq_corrective_action_incident_id_number'))
    )
    with op.batch_alter_table('corrective_action', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_corrective_action_due_on'), ['due_on'], unique=False)

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('impact_started_at', bot.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('detected_at', bot.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('reminder', schema=None) as batch_op:
        # Action reminders share the ledger; the key gains a subject (the action; 0 for update reminders).
        batch_op.add_column(sa.Column('subject', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_reminder_incident_id_kind_due_at'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_reminder_incident_id_kind_subject_due_at'), ['incident_id', 'kind', 'subject', 'due_at'])



def downgrade() -> None:
    with op.batch_alter_table('reminder', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_reminder_incident_id_kind_subject_due_at'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_reminder_incident_id_kind_due_at'), ['incident_id', 'kind', 'due_at'])
        batch_op.drop_column('subject')

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('detected_at')
        batch_op.drop_column('impact_started_at')

    with op.batch_alter_table('corrective_action', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_corrective_action_due_on'))

    op.drop_table('corrective_action')
