"""one-off payments

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:20:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('payments',
    sa.Column('customer_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Numeric(precision=38, scale=9), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('reference', sa.String(length=255), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('line_items', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('success_redirect_url', sa.Text(), nullable=True),
    sa.Column('failure_redirect_url', sa.Text(), nullable=True),
    sa.Column('save_payment_method', sa.Boolean(), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('provider_reference', sa.String(length=255), nullable=True),
    sa.Column('payment_url', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('declined_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('environment', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status in ('pending', 'processing', 'completed', 'expired', 'cancelled')", name=op.f('ck_payments_status')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_payments_amount')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_payments_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments'))
    )
    op.create_index(op.f('ix_payments_merchant_id'), 'payments', ['merchant_id'], unique=False)
    op.create_index('ix_payments_list', 'payments', ['merchant_id', 'environment', 'created_at'], unique=False)
    op.create_index('ix_payments_customer', 'payments', ['merchant_id', 'environment', 'customer_id'], unique=False)
    op.create_index('uq_payments_idempotency_key', 'payments', ['merchant_id', 'environment', 'idempotency_key'], unique=True, postgresql_where=sa.text('idempotency_key is not null'))


def downgrade() -> None:
    op.drop_index('uq_payments_idempotency_key', table_name='payments', postgresql_where=sa.text('idempotency_key is not null'))
    op.drop_index('ix_payments_customer', table_name='payments')
    op.drop_index('ix_payments_list', table_name='payments')
    op.drop_index(op.f('ix_payments_merchant_id'), table_name='payments')
    op.drop_table('payments')
