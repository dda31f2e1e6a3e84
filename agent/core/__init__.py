"""The license core: AgentService (the one owner of the license state, with its identity and flows
parts), the pure status rule, trusted time, the trust anchors and activation by file.
"""
