"""the AI playbook: taxonomy and flags on the incident, rule requirements, evidence,
containment actions, and fingerprints of redacted values

Revision ID: 94a68fa150e6
Revises: 6d76b29864bf
Create Date: 2026-11-23 21:52:46.081731
"""
from alembic import op
import sqlalchemy as sa
import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime


revision = '94a68fa150e6'
down_revision = '6d76b29864bf'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('containment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('reversible', sa.Boolean(), nullable=True),
    sa.Column('success_signal', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=32), nullable=False),
    sa.Column('created_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('verified_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('verified_by', sa.String(length=32), nullable=True),
    sa.Column('verified_evidence', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_containment_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_containment')),
    sa.UniqueConstraint('incident_id', 'number', name=op.f('uq_containment_incident_id_number'))
    )
    op.create_table('evidence_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('item', sa.String(length=40), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('recorded_by', sa.String(length=32), nullable=False),
    sa.Column('recorded_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_evidence_record_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evidence_record')),
    sa.UniqueConstraint('incident_id', 'item', name=op.f('uq_evidence_record_incident_id_item'))
    )
    op.create_table('redacted_value',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('first_seen_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('times_seen', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_redacted_value_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redacted_value')),
    sa.UniqueConstraint('incident_id', 'fingerprint', name=op.f('uq_redacted_value_incident_id_fingerprint'))
    )
    with op.batch_alter_table('redacted_value', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redacted_value_fingerprint'), ['fingerprint'], unique=False)

    op.create_table('rule_requirement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=80), nullable=False),
    sa.Column('roles', sa.String(length=120), nullable=False),
    sa.Column('fired_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('met_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_rule_requirement_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_requirement')),
    sa.UniqueConstraint('incident_id', 'rule', name=op.f('uq_rule_requirement_incident_id_rule'))
    )
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('driver', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('failure_mode', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('flags', sa.String(length=300), server_default='', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('flags')
        batch_op.drop_column('failure_mode')
        batch_op.drop_column('driver')

    op.drop_table('rule_requirement')
    with op.batch_alter_table('redacted_value', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redacted_value_fingerprint'))

    op.drop_table('redacted_value')
    op.drop_table('evidence_record')
    op.drop_table('containment')
