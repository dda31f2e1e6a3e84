"""POSPal tray app: a PySide6 client of the agent (agent.control)."""
