"""The POS's verifying client, under its older name: `pospal_client.client` (the `pospal-client` wheel).

The client is its own distribution (clients/python), so a POS installs it without the agent; the agent's
CLI and tray use the same `AgentClient` for their plain calls (`health`, `request`).
"""

from pospal_client.client import (  # noqa: F401 (re-exported)
    DEFAULT_PORT,
    DEFAULT_RECHECK_S,
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_BYTES,
    AgentClient,
    default_port,
    health,
    license,
    sync,
    verify_local_answer,
)
from pospal_client.errors import (  # noqa: F401 (re-exported for POS apps)
    AgentStarting,
    AgentUnavailable,
    AnswerRefused,
    BadProof,
    LicenseExpired,
    LocalApiError,
    OtherMachine,
)
