"""
Tests for gatehouse.protocols.postgres.
"""
