"""HTTP API routers under `/v1` plus `/health` and `/metrics`; `server.app` assembles them."""
