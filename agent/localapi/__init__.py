"""The local HTTP API on 127.0.0.1 that answers the POS: routes, wire format, sockets, and why the
port could not be taken; HttpControl, the AgentControl over it.
"""
