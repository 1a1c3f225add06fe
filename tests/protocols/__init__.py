"""
Tests for gatehouse.protocols.
"""
