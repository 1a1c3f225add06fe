"""
Build the gateway's service tree from a loaded configuration.

L{build_components} creates the parts every listener shares (later: the
recorder, the token verifier, the policy and the approval broker);
L{makeService} wires them under one L{MultiService} together with one
listening service per configured listener.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gatehouse.cli_approvals import approve_options
from gatehouse.config import (
    ConfigError,
    GatehouseConfig,
    ListenerConfig,
    environment_problems,
    load_config,
    signing_key_problems,
)
from gatehouse.identity import TokenVerifier
from gatehouse.limits import raise_open_file_limit
from gatehouse.metrics import GatewayMetrics
from gatehouse.policy.approval import ApprovalBroker, LogNotifier, WebhookNotifier
from gatehouse.policy.config import ApprovalConfig
from gatehouse.protocols import get_protocol
from gatehouse.recording.index import CRASHED, SessionIndex
from gatehouse.recording.keyring import KeyRing
from gatehouse.recording.keys import NS
from gatehouse.recording.recorder import SegmentRecorder, thread_executor
from gatehouse.session import SessionHub

__all__ = [
    "Components",
    "GatewayService",
    "SwappableVerifier",
    "build_components",
    "install_signal_handlers",
    "makeService",
    "reopen_logs",
]


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
    #: what a reload reaches (see L{GatewayService.reload})
    core: Any = None
    verifier: Any = None
    admin_site: Any = None


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
        self.draining = False
        self.recording_directory: str | None = None

    #: the index's end reason for sessions a dead gateway left open
    CRASHED = CRASHED

    def startService(self) -> Deferred:
        super().startService()
        self.pool.start()
        for problem in self.keyring.load_now():
            self._log.error("{problem}", problem=problem)
        self.keyring.startService()
        # Fetch the issuers' keys now rather than on the first login; this
        # never fails (problems are logged, and keys are fetched on demand).
        self.hub.verifier.prefetch()
        started = self.hub.clock.seconds()
        d = self.index.start()
        d.addCallback(lambda _: self._close_orphans(started))
        return d

    @inlineCallbacks
    def _close_orphans(self, started: float) -> Generator[Deferred[Any], Any, None]:
        """Sessions open in the index at start were left by a crash."""
        try:
            ids = yield self.index.close_orphans(
                self.hub.gateway_id, started, started, self.CRASHED
            )
        except Exception:
            self._log.failure("Marking sessions a crash left open")
            return
        if ids:
            self._log.warn(
                "{count} session(s) were open in the index at start (the gateway "
                "did not stop cleanly); marked ended: {reason}; their recordings "
                "end unsealed: {ids}",
                count=len(ids),
                reason=self.CRASHED,
                ids=" ".join(ids),
            )

    def readiness_problems(self) -> list[str]:
        """
        Why new sessions would be refused now (empty: ready): no signing
        key valid now, the recorder's own problems (directory, disk
        reserve), or a drain in progress.
        """
        problems = []
        if self.draining:
            problems.append("the gateway is shutting down")
        if self.keyring.current(int(self.hub.clock.seconds() * NS)) is None:
            problems.append("no signing key is valid now")
        problems.extend(self.keyring.problems())
        recorder = self.hub.recorder
        recorder_problems = getattr(recorder, "readiness_problems", None)
        if recorder_problems is not None:
            problems.extend(recorder_problems())
        elif self.recording_directory is not None and not os.access(
            self.recording_directory, os.W_OK | os.X_OK
        ):
            # Until the recorder says for itself (directory and disk reserve).
            problems.append(
                f"the recording directory {self.recording_directory} is not writable"
            )
        return problems

    @inlineCallbacks
    def stopService(self) -> Generator[Deferred[Any], Any, None]:
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
    verifier = SwappableVerifier(_make_verifier(config, reactor))
    index = SessionIndex(recording.index, reactor)
    metrics = GatewayMetrics(clock=reactor)
    metrics.targets = frozenset(t.name for t in config.targets)
    metrics.watch_signing_keys(
        lambda: keyring.covered_until() / 1e9 - reactor.seconds()
    )
    recorder.observe_seals(lambda info: metrics.seal())
    recorder.observe_failures(lambda recording, why: metrics.recorder_failure(why))
    options = approve_options(config)
    broker = ApprovalBroker(
        reactor,
        notifiers=_notifiers(config.approval, reactor, options),
        admin_url=config.approval.admin_url if config.approval else None,
        approve_options=options,
    )
    broker.observe(metrics.approval_event)
    hub = SessionHub(
        config.gateway.id,
        recorder,
        # SessionHub asks for a TokenVerifier; the swappable one stands in for
        # it (its attributes are the current verifier's).
        verifier,  # type: ignore[arg-type]
        reactor,
        index,
        policy=config.policy,
        masking=config.masking,
        broker=broker,
        metrics=metrics,
        token_expiry_exempt=(
            t.name for t in config.targets if not t.end_session_at_token_expiry
        ),
        targets=config.targets,
    )
    core = _GatewayCore(pool, keyring, index, hub)
    core.recording_directory = recording.directory
    core.setName("core")
    services: list[IService] = [core]
    if config.admin is not None:
        from gatehouse.admin import (
            HubSessionDirectory,
            make_admin_service,
            make_admin_site,
        )
        from gatehouse.admin.ssh_cert import CertificateEndpoint

        site = make_admin_site(
            broker,
            verifier,
            metrics,
            HubSessionDirectory(hub),
            reactor,
            groups=frozenset(config.admin.groups) or _approver_groups(hub.policy),
            readiness=core.readiness_problems,
            certificates=(
                None
                if config.ssh_user_ca is None
                else CertificateEndpoint(
                    _certificate_issuer(config, reactor), hub, reactor
                )
            ),
        )
        admin = make_admin_service(config.admin, site, reactor)
        admin.setName("admin")
        services.append(admin)
    else:
        site = None
    return Components(
        config=config,
        reactor=reactor,
        session_factory=hub.open,
        services=tuple(services),
        hub=hub,
        core=core,
        verifier=verifier,
        admin_site=site,
    )


def _certificate_issuer(config: GatehouseConfig, reactor: Any) -> Any:
    """The SSH user CA's issuer (its key created when missing)."""
    from gatehouse.admin.ssh_cert import make_issuer
    from gatehouse.config import Problem

    assert config.ssh_user_ca is not None
    try:
        return make_issuer(config.ssh_user_ca, reactor)
    except (ValueError, OSError) as e:
        raise ConfigError([Problem(config.path, "ssh_user_ca.key", str(e))]) from e


def _make_verifier(config: GatehouseConfig, reactor: Any) -> TokenVerifier:
    return TokenVerifier(
        config.identity.issuers,
        reactor,
        max_token_bytes=config.identity.max_token_bytes,
        max_token_lifetime=config.identity.max_token_lifetime,
    )


class SwappableVerifier:
    """
    Verifies tokens with the current L{TokenVerifier}: a reload swaps it
    while the hub and the admin API keep this one object.
    """

    def __init__(self, current: TokenVerifier) -> None:
        self.current = current

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


def _approver_groups(policy: Any) -> frozenset[str]:
    """Every group that may approve something: who needs the admin API."""
    decisions = [policy.default, policy.unparseable, policy.opaque, *policy.rules]
    return frozenset(g for d in decisions if d.action == "review" for g in d.approvers)


def _notifiers(
    approval: ApprovalConfig | None, reactor: Any, options: tuple[str, ...]
) -> list[Any]:
    admin_url = approval.admin_url if approval is not None else None
    notifiers: list[Any] = [LogNotifier(admin_url, options)]
    if approval is not None and approval.webhook is not None:
        hook = approval.webhook
        notifiers.append(
            WebhookNotifier(
                reactor,
                hook.url,
                retries=hook.retries,
                timeout=hook.timeout,
                admin_url=admin_url,
                approve_options=options,
            )
        )
    return notifiers


def makeService(
    config: GatehouseConfig,
    reactor: Any = None,
    *,
    drain: bool = False,
    signals: bool = False,
) -> GatewayService:
    """
    Create the gateway's top-level service.

    @param reactor: Defaults to the global reactor.
    @param drain: Whether stopping waits up to C{gateway.shutdown_grace}
        for open sessions to end (the daemon); otherwise they are closed at
        once.
    @param signals: Whether, once started, it handles SIGHUP, SIGTERM and
        SIGINT itself (L{install_signal_handlers}; the daemon).
    """
    if reactor is None:
        from twisted.internet import reactor
    components = build_components(config, reactor)
    top = GatewayService(components, drain=drain, signals=signals)
    # MultiService starts children in order and stops them in reverse, so
    # listeners only run while the services they rely on do.
    for child in components.services:
        child.setServiceParent(top)
    for listener in config.listeners:
        adapter = get_protocol(listener.protocol)
        targets = tuple(t for t in config.targets if t.protocol == listener.protocol)
        if components.hub is not None:
            for checker in adapter.credentials_checkers(listener, components.reactor):
                components.hub.checkers.register(checker)
        child = adapter.makeListener(
            listener, targets, components.session_factory, components.reactor
        )
        if child.name is None:
            child.setName(f"listener:{listener.name}")
        child.setServiceParent(top)
        top.listeners[listener.name] = (listener, child)
    return top


class GatewayService(MultiService):
    """
    The gateway's top-level service: its children, plus what the daemon's
    signals ask of it as a whole.

      - L{reload} (SIGHUP) applies a new configuration file to new sessions,
        or refuses it and keeps the running one;
      - stopping (SIGTERM) drains first when made with C{drain=True}: new
        clients are refused (PostgreSQL 57P03), open sessions get
        C{gateway.shutdown_grace} to end, then the rest are closed (57P01)
        and sealed; L{hurry} (a second signal) cuts the wait short.

    @ivar listeners: listener name -> (its L{ListenerConfig}, its service).
    """

    _log = Logger()
    #: seconds between looks at the open sessions while draining
    DRAIN_POLL = 0.1

    def __init__(
        self, components: Components, *, drain: bool = False, signals: bool = False
    ) -> None:
        super().__init__()
        self.components = components
        self.config = components.config
        self.drain = drain
        self.signals = signals
        self.listeners: dict[str, tuple[ListenerConfig, IService]] = {}
        self._hurry = False
        self._stopping: Deferred | None = None
        #: set by the first SIGTERM/SIGINT (see L{install_signal_handlers})
        self.stop_requested = False

    @property
    def _reactor(self) -> Any:
        return self.components.reactor

    def privilegedStartService(self) -> None:
        """
        Raise the open-file limit before anything opens files: twistd binds
        the listeners here, and their start checks the limit.
        """
        raise_open_file_limit()
        if self.signals:
            # Before the listeners bind: once a client (or a test) can
            # connect, SIGHUP or SIGUSR1 must not hit their default action,
            # which ends the process.
            install_signal_handlers(self, self._reactor)
        super().privilegedStartService()

    def startService(self) -> None:
        """Start every child; with C{signals}, take over the signals."""
        super().startService()
        if self.signals:
            import signal

            # Again for SIGTERM and SIGINT once Twisted has installed its
            # own handlers over ours.
            self._reactor.addSystemEventTrigger(
                "after",
                "startup",
                install_signal_handlers,
                self,
                self._reactor,
                (signal.SIGTERM, signal.SIGINT),
            )

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred:
        """Drain (if asked to), then stop every child (sealing sessions)."""
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        if self.drain:
            await self._drain()
        await super().stopService()

    def hurry(self) -> None:
        """End a drain now: open sessions are closed without more waiting."""
        self._hurry = True

    async def _drain(self) -> None:
        core, hub = self.components.core, self.components.hub
        core.draining = True
        for listener, service in self.listeners.values():
            get_protocol(listener.protocol).set_draining(service, True)
        grace = self.config.gateway.shutdown_grace
        clock = self._reactor
        deadline = clock.seconds() + grace

        def logged_in() -> int:
            # Connections still logging in are not waited for: they would be
            # refused anyway, and a client without a token must not make
            # every restart last the whole grace period.
            return sum(1 for s in hub.sessions.values() if s.identity is not None)

        self._log.info(
            "Draining: {count} session(s) open; new clients are refused; "
            "waiting up to {grace} s for them to end (signal again to stop now)",
            count=logged_in(),
            grace=grace,
        )
        while logged_in() and not self._hurry:
            left = deadline - clock.seconds()
            if left <= 0:
                break
            await deferLater(clock, min(self.DRAIN_POLL, left))
        if logged_in():
            self._log.warn(
                "Closing {count} session(s) still open after the drain",
                count=logged_in(),
            )
        else:
            self._log.info("Drained: every session ended")

    # -- reloading -------------------------------------------------------------

    def reload(self) -> bool:
        """
        Read the configuration file again and apply it to new sessions.

        A file with problems is refused, each problem logged on its own line,
        and the running configuration stays.  What cannot change without a
        restart (listener addresses, the recording directory, the admin
        API's address, ...) is logged and left as it is; the rest applies.

        @return: whether the new configuration was applied.
        """
        path = self.config.path
        self._log.info("Reloading the configuration from {path}", path=path)
        try:
            # Nothing on disk changes before the file is accepted.
            new = load_config(path, create_directories=False)
            errors = environment_problems(new)
            if new.recording.signing_keys != self.config.recording.signing_keys:
                errors += signing_key_problems(new, self._reactor.seconds())[0]
            if errors:
                raise ConfigError(errors)
            prepared = self._prepare(new)
        except ConfigError as e:
            self._refused(e.lines())
            return False
        except Exception as e:
            self._log.failure("Reloading {path}", path=path)
            self._refused([f"{path}: {e}"])
            return False
        for line in prepared.restart:
            self._log.warn(
                "Reload: {what} needs a restart; the running value stays",
                what=line,
            )
        self._apply(new, prepared)
        self._log.info(
            "Reloaded {path}: new sessions use it; open sessions keep the policy "
            "they started with",
            path=path,
        )
        return True

    def _refused(self, lines: list[str]) -> None:
        self._log.error(
            "Reload refused: {count} problem(s); the running configuration stays",
            count=len(lines),
        )
        for line in lines:
            self._log.error("{problem}", problem=line)

    def _prepare(self, new: GatehouseConfig) -> _Prepared:
        """Build what may fail (TLS files, issuers) before anything changes."""
        old = self.config
        restart = _restart_needed(old, new)
        updates = []
        for listener in new.listeners:
            running = self.listeners.get(listener.name)
            if running is None or _where(running[0]) != _where(listener):
                continue
            adapter = get_protocol(listener.protocol)
            targets = tuple(t for t in new.targets if t.protocol == listener.protocol)
            apply = adapter.update_listener(running[1], listener, targets)
            if apply is None:
                restart.append(f"listener {listener.name} (its protocol cannot reload)")
                continue
            updates.append((listener, apply))
        verifier = _make_verifier(new, self._reactor)
        return _Prepared(tuple(restart), tuple(updates), verifier)

    def _apply(self, new: GatehouseConfig, prepared: _Prepared) -> None:
        components = self.components
        hub, core = components.hub, components.core
        for listener, apply in prepared.listener_updates:
            apply()
            self.listeners[listener.name] = (listener, self.listeners[listener.name][1])
        components.verifier.current = prepared.verifier
        prepared.verifier.prefetch()
        hub.policy = new.policy
        hub.masking = tuple(new.masking)
        hub.targets = {t.name: t for t in new.targets}
        _end_removed_targets(hub, {t.name for t in new.targets})
        if hub.metrics is not None:
            hub.metrics.targets = frozenset(t.name for t in new.targets)
        broker = hub.broker
        if broker is not None:
            options = approve_options(new)
            broker.reconfigure(
                _notifiers(new.approval, self._reactor, options),
                new.approval.admin_url if new.approval else None,
                options,
            )
        hub.token_expiry_exempt = frozenset(
            t.name for t in new.targets if not t.end_session_at_token_expiry
        )
        recording = new.recording
        if recording.signing_keys != self.config.recording.signing_keys:
            core.keyring.use_directory(recording.signing_keys, recording.key_warning)
        site = components.admin_site
        if site is not None and new.admin is not None and getattr(site, "admin", None):
            site.admin.groups = frozenset(new.admin.groups) or _approver_groups(
                new.policy
            )
        # What needs a restart keeps its running value in the kept config.
        self.config = attrs.evolve(
            new,
            path=self.config.path,
            gateway=attrs.evolve(
                self.config.gateway, shutdown_grace=new.gateway.shutdown_grace
            ),
            recording=attrs.evolve(
                self.config.recording,
                signing_keys=recording.signing_keys,
                key_warning=recording.key_warning,
            ),
            listeners=tuple(c for c, _ in self.listeners.values()),
            admin=self.config.admin,
            ssh_user_ca=self.config.ssh_user_ca,
        )


def _end_removed_targets(hub: SessionHub, targets: set[str]) -> None:
    """
    End the open sessions whose target a reload removed: taking a target
    out of the configuration is how an operator cuts access to it, and a
    session must not outlive that (other changes apply to new sessions).
    """
    for session in list(hub.sessions.values()):
        if session.target is None or session.target in targets or session.closed:
            continue
        session.end_message = (
            f'the target "{session.target}" was removed from the gateway\'s'
            " configuration; the session is closed"
        )
        session.terminate(f"target {session.target} removed by a reload")


@attrs.frozen
class _Prepared:
    """What a reload built before changing anything."""

    restart: tuple[str, ...]
    #: per listener, its new configuration and what applies it
    listener_updates: tuple[tuple[ListenerConfig, Callable[[], None]], ...]
    verifier: TokenVerifier


def _where(listener: ListenerConfig) -> tuple[str, str, int]:
    return (listener.protocol, listener.address, listener.port)


def _restart_needed(old: GatehouseConfig, new: GatehouseConfig) -> list[str]:
    """Describe each change a reload cannot apply, one line each."""
    lines = []
    before = {c.name: c for c in old.listeners}
    after = {c.name: c for c in new.listeners}
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None:
            added = after[name]
            lines.append(f"new listener {name} ({added.address}:{added.port})")
        elif b is None:
            lines.append(f"removing listener {name} (still on {a.address}:{a.port})")
        elif _where(a) != _where(b):
            lines.append(
                f"listener {name}: {a.protocol} {a.address}:{a.port} -> "
                f"{b.protocol} {b.address}:{b.port}"
            )
        else:
            # Options a running listener cannot take on (the protocol says).
            for key in get_protocol(b.protocol).restart_needed(a, b):
                lines.append(f"listener {name}: {key}")
    if old.gateway.id != new.gateway.id:
        lines.append(f"gateway.id {old.gateway.id} -> {new.gateway.id}")
    for key in (
        "directory",
        "index",
        "root_public_keys",
        "segment_max_bytes",
        "seal_interval",
        "flush_interval",
        "reserve_bytes",
        "preallocate",
    ):
        if getattr(old.recording, key) != getattr(new.recording, key):
            lines.append(f"recording.{key}")
    if old.admin != new.admin and (
        old.admin is None
        or new.admin is None
        or attrs.evolve(old.admin, groups=()) != attrs.evolve(new.admin, groups=())
    ):
        lines.append("admin (address, port or tls)")
    if old.ssh_user_ca != new.ssh_user_ca:
        lines.append("ssh_user_ca")
    return lines


def install_signal_handlers(
    service: GatewayService, reactor: Any, signals: Iterable[int] | None = None
) -> None:
    """
    Make the daemon's signals act on C{service}; call it once the reactor
    runs (it replaces Twisted's own SIGINT and SIGTERM handlers):

      - SIGHUP: reopen the log files and reload the configuration;
      - SIGUSR1: reopen the log files (twistd's rotation signal);
      - SIGTERM or SIGINT: drain and stop; a second one: stop now.

    Handlers only hand the work to the reactor (C{callFromThread}).

    @param signals: only these of the three (default: all).
    """
    import signal

    def hup(signum: int, frame: object) -> None:
        reactor.callFromThread(_hangup, service)

    def term(signum: int, frame: object) -> None:
        reactor.callFromThread(_terminate, service, reactor, signum)

    def usr1(signum: int, frame: object) -> None:
        reactor.callFromThread(reopen_logs)

    # SIGUSR1 is twistd's "rotate the log" signal; the gateway's log
    # observer replaces twistd's, so without this handler it would kill the
    # process.  Rotation is logrotate's; the gateway reopens its files.
    handlers: dict[int, Callable[[int, object], None]] = {
        signal.SIGHUP: hup,
        signal.SIGTERM: term,
        signal.SIGINT: term,
        signal.SIGUSR1: usr1,
    }
    for signum in handlers if signals is None else signals:
        signal.signal(signum, handlers[signum])


_signal_log = Logger(namespace="gatehouse.signals")


def _hangup(service: GatewayService) -> None:
    _signal_log.info("SIGHUP: reopening log files and reloading the configuration")
    reopen_logs()
    service.reload()


def _terminate(service: GatewayService, reactor: Any, signum: int) -> None:
    import signal

    name = signal.Signals(signum).name
    if not service.stop_requested:
        service.stop_requested = True
        _signal_log.info("{name}: stopping", name=name)
        reactor.stop()
    else:
        _signal_log.warn("{name} again: closing open sessions now", name=name)
        service.hurry()


def reopen_logs() -> list[str]:
    """
    Reopen the log files (after logrotate moved them): twistd's
    C{--logfile}, and gatehouse's own (L{gatehouse.logs.reopen}).

    @return: the paths reopened.
    """
    from twisted.logger import globalLogPublisher
    from twisted.python.logfile import LogFile

    reopened = []
    files: list[LogFile] = []
    # twistd keeps its LogFile only in its observer and its SIGUSR1 handler.
    for observer in getattr(globalLogPublisher, "_observers", ()):
        for candidate in (observer, getattr(observer, "_outFile", None)):
            if isinstance(candidate, LogFile) and candidate not in files:
                files.append(candidate)
    try:
        import signal

        handler = signal.getsignal(signal.SIGUSR1)
    except (ImportError, AttributeError):
        handler = None
    for cell in getattr(handler, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, LogFile) and value not in files:
            files.append(value)
    for log_file in files:
        try:
            log_file.reopen()
            reopened.append(log_file.path)
        except OSError as e:
            _signal_log.error("Cannot reopen {path}: {e}", path=log_file.path, e=e)
    from gatehouse import logs

    try:
        logs.reopen()
    except Exception:
        _signal_log.failure("Reopening gatehouse's log files")
    return reopened
