"""
PostgreSQL support: the sans-IO wire codec (L{gatehouse.protocols.postgres.codec})
and, built on it, the client-facing server side and the upstream client side.
"""
