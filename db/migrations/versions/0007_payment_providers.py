"""payment providers: payment_sessions.provider/provider_reference, stripe_events, provider_customers

Issue 11 (integrations/payments). Other payment helpers append their tables here (upgrade and downgrade,
same style), as 0006 did for issue 10.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ---- provider (issue 11: integrations/payments, the Stripe webhook endpoint) ----
    op.add_column('payment_sessions', sa.Column('provider', sa.String(length=16), server_default='sandbox', nullable=False))
    op.add_column('payment_sessions', sa.Column('provider_reference', sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f('uq_payment_sessions_provider_reference'), 'payment_sessions', ['provider_reference'])
    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('object_id', sa.String(length=255), nullable=True),
    sa.Column('owner_kind', sa.String(length=16), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stripe_events'))
    )
    op.create_table('provider_customers',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('environment', sa.String(length=8), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('provider_customer', sa.String(length=255), nullable=False),
    sa.Column('payment_method', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_provider_customers_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_customers')),
    sa.UniqueConstraint('merchant_id', 'environment', 'customer_id', 'provider', name='uq_provider_customers_customer')
    )


def downgrade() -> None:
    # ---- provider ----
    op.drop_table('provider_customers')
    op.drop_table('stripe_events')
    op.drop_constraint(op.f('uq_payment_sessions_provider_reference'), 'payment_sessions', type_='unique')
    op.drop_column('payment_sessions', 'provider_reference')
    op.drop_column('payment_sessions', 'provider')
