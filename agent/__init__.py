"""POSPal License Agent: the headless core that owns license state on a POS computer.

Front ends (the tray, a POS written in Python) reach the agent through one interface,
`agent.control.AgentControl`, and get it from `connect()`: the composition root, so no front end wires
the agent's modules (settings, store, service, transport) itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pospal_protocol import __version__

if TYPE_CHECKING:
    from agent.config import AgentSettings
    from agent.control import AgentControl

__all__ = ["__version__", "connect"]


def connect(target: object = None, *, settings: AgentSettings | None = None) -> AgentControl:
    """The `AgentControl` a front end talks to.

    - No `target`: this PC's license service over its caller-checked channel (`agent.link.channelcontrol`;
      where from `settings`, by default read from the environment), the way every tray attaches.
    - An `AgentService` (the agent in this very process): the in-process adapter around it.
    - Anything else is taken to be an `AgentControl` already (an `HttpControl`, a test fake): itself.
    """
    if target is None:
        from agent.config import AgentSettings
        from agent.link.channelcontrol import ChannelControl, open_stream

        settings = settings or AgentSettings.from_env()
        return ChannelControl(open_stream(settings))
    from agent.control import InProcessControl
    from agent.core.service import AgentService

    if isinstance(target, AgentService):
        return InProcessControl(target)
    return target  # type: ignore[return-value]  # already a control (duck-typed, like the test fakes)
