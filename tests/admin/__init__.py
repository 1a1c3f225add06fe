"""
Tests for L{gatehouse.admin}.
"""
