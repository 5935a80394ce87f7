"""drills: drill incidents, scorecards, postmortem completion

Revision ID: e3ef7ccba91d
Revises: 066e8a67f7f9
Create Date: 2026-11-23 23:55:36.942377
"""
from alembic import op
import sqlalchemy as sa
import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime


revision = 'e3ef7ccba91d'
down_revision = '066e8a67f7f9'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('drill',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('scenario', sa.String(length=80), nullable=False),
    sa.Column('family', sa.String(length=40), nullable=False),
    sa.Column('facilitator_id', sa.String(length=32), nullable=False),
    sa.Column('script', sa.Text(), nullable=False),
    sa.Column('started_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=32), nullable=True),
    sa.Column('score', sa.Integer(), nullable=True),
    sa.Column('max_score', sa.Integer(), nullable=True),
    sa.Column('scorecard', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_drill_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drill')),
    sa.UniqueConstraint('incident_id', name=op.f('uq_drill_incident_id'))
    )
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('postmortem_completed_at', bot.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('is_drill', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('time_scale', sa.Float(), server_default=sa.text('1.0'), nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('time_scale')
        batch_op.drop_column('is_drill')
        batch_op.drop_column('postmortem_completed_at')

    op.drop_table('drill')
