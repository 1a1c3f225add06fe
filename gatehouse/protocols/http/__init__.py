"""
HTTP APIs through the gateway: the listener and the target client every
HTTP protocol shares (C{http}, and C{kubernetes} in
L{gatehouse.protocols.kubernetes}), and the plain C{http} protocol.
"""
