"""impact and notification assessments: answers, notification clocks, the notification decision

Revision ID: 066e8a67f7f9
Revises: 94a68fa150e6
Create Date: 2026-11-23 22:24:52.985093
"""
from alembic import op
import sqlalchemy as sa
import bot.db  # noqa: F401 - autogenerate refers to bot.db.UTCDateTime


revision = '066e8a67f7f9'
down_revision = '94a68fa150e6'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assessment_answer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('topic', sa.String(length=20), nullable=False),
    sa.Column('question', sa.String(length=40), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('answered_by', sa.String(length=32), nullable=False),
    sa.Column('answered_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_assessment_answer_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_answer')),
    sa.UniqueConstraint('incident_id', 'topic', 'question', name=op.f('uq_assessment_answer_incident_id_topic_question'))
    )
    op.create_table('notification_deadline',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('clock', sa.String(length=120), nullable=False),
    sa.Column('deadline_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('remind_at', bot.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', bot.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incident.id'], name=op.f('fk_notification_deadline_incident_id_incident'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deadline')),
    sa.UniqueConstraint('incident_id', 'clock', 'remind_at', name=op.f('uq_notification_deadline_incident_id_clock_remind_at'))
    )
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notification_decision', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('notification_decided_at', bot.db.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('notification_decided_at')
        batch_op.drop_column('notification_decision')

    op.drop_table('notification_deadline')
    op.drop_table('assessment_answer')
