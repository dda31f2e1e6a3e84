"""Signed updates: the TUF client, the update cycle and swap policy, the install dir's versions,
and the launcher that swaps, checks and rolls back.
"""
