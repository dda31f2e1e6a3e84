"""The license protocol kernel, shared by the agent and the server.

It holds the wire format and nothing else: token claims and their JWS encoding (`tokens`), trusted keys
and key-set updates (`trust`), machine-signed requests (`signatures`), verified local answers (`proof`),
the fingerprint and its match rules (`fingerprint`, with its per-OS sources), the build flavour
(`flavour`), their errors (`errors`), the `Clock` protocol with its real and fake clocks (`clock`), and
the e-mail address rule (`emails`). `agent/` and `server/` both import it, and the POS's `pospal-client`
wheel ships it; it imports none of them.
"""

# The release version, in one place: the agent, the server, the bundle, the installer and the package
# metadata (pyproject.toml reads it) all take it from here.
__version__ = "1.0.0"
