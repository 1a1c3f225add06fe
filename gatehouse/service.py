"""
Build the gateway's service tree from a loaded configuration.

L{build_components} creates the parts every listener shares (later: the
recorder, the token verifier, the policy and the approval broker);
L{makeService} wires them under one L{MultiService} together with one
listening service per configured listener.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gatehouse.approval import ApprovalBroker, LogNotifier, WebhookNotifier
from gatehouse.config import GatehouseConfig
from gatehouse.identity import TokenVerifier
from gatehouse.metrics import GatewayMetrics
from gatehouse.policy_config import ApprovalConfig
from gatehouse.protocols import get_protocol
from gatehouse.recording.index import SessionIndex
from gatehouse.recording.keyring import KeyRing
from gatehouse.recording.recorder import SegmentRecorder, thread_executor
from gatehouse.session import SessionHub

__all__ = ["Components", "build_components", "makeService"]


def _sessions_unavailable(*args: object, **kwargs: object) -> Any:
    # Until the session layer is wired in, a connection cannot get a session;
    # raising makes the listener refuse it (fail closed).
    raise NotImplementedError("sessions are not available yet")


@attrs.frozen
class Components:
    """
    What the listeners of one gateway share.

    @ivar config: The configuration everything was built from.
    @ivar reactor: The reactor everything runs on.
    @ivar session_factory: Opens a L{gatehouse.session.Session} for an
        accepted connection; handed to every listener.
    @ivar services: Background services (recording, key rotation, ...); they
        are started before, and stopped after, the listeners.
    """

    config: GatehouseConfig
    reactor: Any
    session_factory: Callable[..., Any] = _sessions_unavailable
    services: tuple[IService, ...] = ()
    hub: Any = None


class _GatewayCore(Service):
    """
    Starts and stops what every session relies on: the recorder's thread
    pool, the signing keys, the index; and closes open sessions (sealing
    their recordings) before those go away.
    """

    _log = Logger()

    def __init__(
        self, pool: ThreadPool, keyring: KeyRing, index: SessionIndex, hub: SessionHub
    ):
        self.pool = pool
        self.keyring = keyring
        self.index = index
        self.hub = hub

    def startService(self) -> Deferred:
        super().startService()
        self.pool.start()
        for problem in self.keyring.load_now():
            self._log.error("{problem}", problem=problem)
        self.keyring.startService()
        # Fetch the issuers' keys now rather than on the first login; this
        # never fails (problems are logged, and keys are fetched on demand).
        self.hub.verifier.prefetch()
        return self.index.start()

    @inlineCallbacks
    def stopService(self) -> Deferred:
        super().stopService()
        # Deny what waits for approval first: those statements never run.
        if self.hub.broker is not None:
            self.hub.broker.deny_all("gateway stopping")
        yield self.hub.close_all("gateway stopping")
        self.keyring.stopService()
        yield self.index.stop()
        self.pool.stop()


def build_components(config: GatehouseConfig, reactor: Any) -> Components:
    """
    Create the shared parts of a gateway described by C{config}.

    The recorder, the token verifier, the index and the session hub are
    built here; the session factory every listener gets is the hub's
    C{open}.
    """
    recording = config.recording
    pool = ThreadPool(1, 4, "gatehouse-recorder")
    executor = thread_executor(reactor, pool)
    keyring = KeyRing(
        recording.signing_keys,
        config.gateway.id,
        reactor,
        executor,
        warn_before=recording.key_warning,
    )
    recorder = SegmentRecorder(
        recording.directory,
        config.gateway.id,
        keyring.current,
        reactor,
        executor,
        segment_max_bytes=recording.segment_max_bytes,
        seal_interval=recording.seal_interval,
        flush_interval=recording.flush_interval,
        reserve_bytes=recording.reserve_bytes,
        preallocate=recording.preallocate,
    )
    verifier = TokenVerifier(
        config.identity.issuers,
        reactor,
        max_token_bytes=config.identity.max_token_bytes,
    )
    index = SessionIndex(recording.index, reactor)
    metrics = GatewayMetrics()
    recorder.observe_seals(lambda info: metrics.seal())
    recorder.observe_failures(lambda *args: metrics.recorder_failure())
    broker = ApprovalBroker(
        reactor,
        notifiers=_notifiers(config.approval, reactor),
        admin_url=config.approval.admin_url if config.approval else None,
    )
    broker.observe(metrics.approval_event)
    hub = SessionHub(
        config.gateway.id,
        recorder,
        verifier,
        reactor,
        index,
        policy=config.policy,
        masking=config.masking,
        broker=broker,
        metrics=metrics,
    )
    core = _GatewayCore(pool, keyring, index, hub)
    core.setName("core")
    services: list[IService] = [core]
    if config.admin is not None:
        from gatehouse.admin import (
            HubSessionDirectory,
            make_admin_service,
            make_admin_site,
        )

        site = make_admin_site(
            broker,
            verifier,
            metrics,
            HubSessionDirectory(hub),
            reactor,
            groups=frozenset(config.admin.groups) or _approver_groups(hub.policy),
        )
        admin = make_admin_service(config.admin, site, reactor)
        admin.setName("admin")
        services.append(admin)
    return Components(
        config=config,
        reactor=reactor,
        session_factory=hub.open,
        services=tuple(services),
        hub=hub,
    )


def _approver_groups(policy: Any) -> frozenset[str]:
    """Every group that may approve something: who needs the admin API."""
    decisions = [policy.default, policy.unparseable, policy.opaque, *policy.rules]
    return frozenset(g for d in decisions if d.action == "review" for g in d.approvers)


def _notifiers(approval: ApprovalConfig | None, reactor: Any) -> list[Any]:
    admin_url = approval.admin_url if approval is not None else None
    notifiers: list[Any] = [LogNotifier(admin_url)]
    if approval is not None and approval.webhook is not None:
        hook = approval.webhook
        notifiers.append(
            WebhookNotifier(
                reactor,
                hook.url,
                retries=hook.retries,
                timeout=hook.timeout,
                admin_url=admin_url,
            )
        )
    return notifiers


def makeService(config: GatehouseConfig, reactor: Any = None) -> MultiService:
    """
    Create the gateway's top-level service.

    @param reactor: Defaults to the global reactor.
    """
    if reactor is None:
        from twisted.internet import reactor
    components = build_components(config, reactor)
    top = MultiService()
    # MultiService starts children in order and stops them in reverse, so
    # listeners only run while the services they rely on do.
    for child in components.services:
        child.setServiceParent(top)
    for listener in config.listeners:
        adapter = get_protocol(listener.protocol)
        targets = tuple(t for t in config.targets if t.protocol == listener.protocol)
        child = adapter.makeListener(
            listener, targets, components.session_factory, components.reactor
        )
        if child.name is None:
            child.setName(f"listener:{listener.name}")
        child.setServiceParent(top)
    return top
