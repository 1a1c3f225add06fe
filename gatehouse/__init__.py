"""
gatehouse: a Layer-7 access gateway on Twisted.

It verifies who is speaking (OIDC JWT), reaches targets with credentials only
it holds, applies policy to every command, and records every byte both ways
into signed, hash-chained segment files.
"""

__version__ = "0.1.0"
