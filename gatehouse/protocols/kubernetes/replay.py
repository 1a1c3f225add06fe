"""
Replay recorded Kubernetes sessions: the HTTP request timeline
(L{gatehouse.protocols.http.replay}), registered for C{kubernetes}.
"""

from __future__ import annotations

from gatehouse.protocols.http.replay import render_http
from gatehouse.recording.render import register_renderer

__all__ = ["render_kubernetes"]

render_kubernetes = render_http

register_renderer("kubernetes", render_kubernetes)
