"""
The admin HTTP API (approvals, sessions, health, metrics), and later the web
console.
"""

from gatehouse.admin.api import (
    MAX_BODY,
    AdminService,
    make_admin_service,
    make_admin_site,
)
from gatehouse.admin.sessions import (
    HubSessionDirectory,
    ISessionDirectory,
    NoSessionIndex,
)

__all__ = [
    "MAX_BODY",
    "AdminService",
    "HubSessionDirectory",
    "ISessionDirectory",
    "NoSessionIndex",
    "make_admin_service",
    "make_admin_site",
]
