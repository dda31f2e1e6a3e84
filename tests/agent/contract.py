"""The local API's `GET /v1/license` fields that PRODUCT.md promises POS apps, in its order."""

PRODUCT_LICENSE_FIELDS = (
    "license_state",
    "licensed",
    "reason",
    "message",
    "days_left",
    "valid_until",
    "grace_until",
    "plan",
    "features",
    "seats",
    "customer_email",
    "machine_id",
    "terminal_name",
    "last_sync",
    "next_sync",
    "agent_version",
)
