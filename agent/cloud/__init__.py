"""Talking to the license server: the HTTP transport (OS trust store, proxy) and the sync engine."""
