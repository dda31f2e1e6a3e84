"""pospal-client: verify the POSPal License Agent's answer from a POS app.

    from pospal_client import AgentClient
    if AgentClient().can_sell(): ...

`AgentClient` (`pospal_client.client`) asks the agent on 127.0.0.1 and proves its answer; the errors are
`pospal_client.errors`; the trusted keys, and how they follow a key rotation, are `pospal_client.trust`;
a Flask app uses `pospal_client.flask` (the `flask` extra). The checks themselves are the license
protocol's kernel (`pospal_protocol`), which this distribution ships as the agent does: one implementation.
"""

from pospal_client.client import AgentClient, default_port, verify_local_answer
from pospal_client.errors import (
    AgentStarting,
    AgentUnavailable,
    AnswerRefused,
    BadProof,
    LicenseExpired,
    LocalApiError,
    OtherMachine,
)

__version__ = "1.0.0"

__all__ = [
    "AgentClient",
    "AgentStarting",
    "AgentUnavailable",
    "AnswerRefused",
    "BadProof",
    "LicenseExpired",
    "LocalApiError",
    "OtherMachine",
    "__version__",
    "default_port",
    "verify_local_answer",
]
