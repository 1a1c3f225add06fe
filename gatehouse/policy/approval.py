"""
Approval of reviewed commands by other people.

When the policy says C{review}, the session asks the L{ApprovalBroker} for a
verdict: the broker records a pending L{ApprovalRequest}, tells the
configured L{IApprovalNotifier}s about it and returns a L{Deferred} that
fires with a L{Verdict} once enough approvers agree, one of them denies,
the request times out, its session goes away or the gateway stops.  It
never fails and fires exactly once; anything but an approval means the
command does not run.

Approvers act through the admin API (and the CLI built on it).  The broker
enforces the rules: an approver must belong to one of the request's
approver groups (C{"*"}: anyone), may not decide their own request, and
counts once however often they approve.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shlex
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from hyperlink import DecodedURL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from zope.interface import Interface, implementer

from gatehouse._duration import format_duration
from gatehouse.http_client import HTTPClient, check_url, describe_error
from gatehouse.identity import Identity
from gatehouse.policy.rules import Command, Decision

__all__ = [
    "STATES",
    "Approval",
    "ApprovalBroker",
    "ApprovalError",
    "ApprovalRequest",
    "IApprovalNotifier",
    "LogNotifier",
    "Verdict",
    "WebhookNotifier",
    "instructions",
    "slackMessage",
]

STATES = ("pending", "approved", "denied", "expired", "cancelled")

_ID_PREFIX = "apr-"
_ID_LENGTH = 12


class ApprovalError(Exception):
    """
    An approver's action was refused.

    @ivar code: C{"not-found"}, C{"not-pending"}, C{"self-approval"},
        C{"not-an-approver"} or C{"already-approved"}.
    @ivar message: why, fit to show the approver.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Approval:
    """
    One approver's vote.

    @ivar approved: C{False} for a deny.
    @ivar issuer: the issuer of the approver's identity; with C{subject}
        it tells approvers apart.
    """

    subject: str
    name: str
    comment: str
    at: float
    approved: bool
    issuer: str = ""

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "subject": self.subject,
            "name": self.name,
            "issuer": self.issuer,
            "comment": self.comment,
            "at": self.at,
            "approved": self.approved,
        }


@attrs.frozen
class ApprovalRequest:
    """
    A snapshot of one request for approval; the broker replaces it on each
    change.

    @ivar id: C{"apr-"} and 12 lowercase base32 characters: unguessable, and
        short enough to type.
    @ivar approvers: the groups whose members may decide (C{"*"}: anyone but
        the requester).
    @ivar approvals_required: distinct approvers needed.
    @ivar created: when it was made, in seconds since the epoch.
    @ivar expires: when it times out.
    @ivar state: C{"pending"}, C{"approved"}, C{"denied"}, C{"expired"} or
        C{"cancelled"}.
    @ivar votes: every vote so far, oldest first.
    @ivar reason: why it ended, once it has.
    """

    id: str
    session_id: str
    protocol: str
    target: str
    requester: Identity
    commands: tuple[Command, ...]
    rule: str
    approvers: tuple[str, ...]
    approvals_required: int
    created: float
    expires: float
    state: str
    votes: tuple[Approval, ...] = ()
    reason: str | None = None

    @property
    def pending(self) -> bool:
        """It is still waiting for a decision."""
        return self.state == "pending"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "protocol": self.protocol,
            "target": self.target,
            "requester": {
                "subject": self.requester.subject,
                "name": self.requester.name,
                "groups": list(self.requester.groups),
                "issuer": self.requester.issuer,
            },
            "commands": [c.as_json() for c in self.commands],
            "rule": self.rule,
            "approvers": list(self.approvers),
            "approvals_required": self.approvals_required,
            "created": self.created,
            "expires": self.expires,
            "state": self.state,
            "votes": [vote.as_json() for vote in self.votes],
            "reason": self.reason,
        }


@attrs.frozen
class Verdict:
    """
    The outcome of a request: whether the command may run, and why.

    @ivar request: the request in its final state (C{None} when there was
        no broker to ask).
    """

    approved: bool
    reason: str
    request: ApprovalRequest | None = None


class IApprovalNotifier(Interface):
    """
    Tells people that a request is waiting for them.
    """

    def notify(request: ApprovalRequest) -> None:
        """
        A request was just made.  Must return at once and never raise:
        delivery happens in the background, and failures are logged.
        """


Observer = Callable[[str, ApprovalRequest, "Approval | None"], object]


def _newID() -> str:
    return (
        _ID_PREFIX
        + base64.b32encode(os.urandom(10)).decode("ascii")[:_ID_LENGTH].lower()
    )


def _voter(identity: Identity | Approval) -> tuple[str, str]:
    return (identity.subject, identity.issuer)


def instructions(
    request: ApprovalRequest,
    admin_url: str | None = None,
    options: Sequence[str] | None = None,
) -> str:
    """
    One line telling an approver how to approve or deny C{request}: the
    commands, ready to paste into a shell.

    @param admin_url: the gateway's admin API, if known.
    @param options: the C{gatehouse approvals} options that reach the
        admin API (such as C{--config FILE}); instead of C{--url admin_url}.
    """
    if options is None:
        options = () if admin_url is None else ("--url", admin_url)
    given = "".join(" " + shlex.quote(option) for option in options)
    return (
        f"approve with: gatehouse approvals approve{given} {request.id} "
        f"(or deny with: gatehouse approvals deny{given} {request.id})"
    )


@attrs.define
class _Entry:
    request: ApprovalRequest
    result: Deferred[Verdict]
    timer: IDelayedCall | None = None


class ApprovalBroker:
    """
    Keeps pending requests for approval and decides them.

    @param clock: schedules timeouts and says when things happen.
    @param notifiers: told about each new request.
    @param admin_url: the admin API's URL, for L{instructions}.
    @param recent_limit: how many decided requests L{recent} remembers.
    @param approve_options: for L{instructions}, instead of C{admin_url}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        notifiers: Sequence[IApprovalNotifier] = (),
        admin_url: str | None = None,
        recent_limit: int = 1000,
        approve_options: Sequence[str] | None = None,
    ) -> None:
        self._clock = clock
        self.reconfigure(notifiers, admin_url, approve_options)
        self._pending: dict[str, _Entry] = {}
        self._recent: deque[ApprovalRequest] = deque(maxlen=recent_limit)
        self._observers: list[Observer] = []

    def reconfigure(
        self,
        notifiers: Sequence[IApprovalNotifier],
        admin_url: str | None,
        approve_options: Sequence[str] | None = None,
    ) -> None:
        """
        Use these notifiers and approval instructions for requests from now
        on (a configuration reload); pending requests keep their state.
        """
        self._notifiers = tuple(notifiers)
        self._adminURL = admin_url
        self._approveOptions = approve_options

    def request(
        self,
        session_id: str,
        protocol: str,
        target: str,
        requester: Identity,
        commands: Sequence[Command],
        decision: Decision,
    ) -> tuple[ApprovalRequest, Deferred[Verdict]]:
        """
        Ask for approval of C{commands}, which C{decision} (a C{review})
        held back.

        @return: the new request, and a L{Deferred} that fires exactly once
            with its L{Verdict} and never fails.  Cancelling the L{Deferred}
            cancels the request.
        """
        requestID = _newID()
        while self.get(requestID) is not None:
            requestID = _newID()
        now = self._clock.seconds()
        timeout = max(0.0, float(decision.timeout))
        request = ApprovalRequest(
            id=requestID,
            session_id=session_id,
            protocol=protocol,
            target=target,
            requester=requester,
            commands=tuple(commands),
            rule=decision.rule,
            approvers=tuple(decision.approvers),
            approvals_required=max(1, decision.approvals),
            created=now,
            expires=now + timeout,
            state="pending",
        )
        result: Deferred[Verdict] = Deferred(
            lambda _: self.cancel(requestID, "request cancelled")
        )
        entry = _Entry(request, result)
        self._pending[requestID] = entry
        entry.timer = self._clock.callLater(timeout, self._expire, requestID)
        if not request.approvers:
            self._log.warn(
                "Approval request {id} (rule {rule}) names no approvers: "
                "it can only time out",
                id=requestID,
                rule=request.rule,
            )
        self._emit("requested", request, None)
        if entry.request.pending:
            for notifier in self._notifiers:
                try:
                    notifier.notify(request)
                except Exception:
                    self._log.failure(
                        "Approval notifier {notifier!r} failed", notifier=notifier
                    )
        return self.get(requestID) or request, result

    def get(self, request_id: str) -> ApprovalRequest | None:
        """The request called C{request_id}, pending or recently decided."""
        entry = self._pending.get(request_id)
        if entry is not None:
            return entry.request
        for request in self._recent:
            if request.id == request_id:
                return request
        return None

    def pending(self) -> list[ApprovalRequest]:
        """Requests waiting for a decision, oldest first."""
        return sorted(
            (entry.request for entry in self._pending.values()),
            key=lambda request: request.created,
        )

    def recent(self, limit: int = 100) -> list[ApprovalRequest]:
        """At most C{limit} decided requests, newest first."""
        return list(self._recent)[: max(0, limit)]

    def approve(
        self, request_id: str, approver: Identity, comment: str = ""
    ) -> ApprovalRequest:
        """
        Record C{approver}'s approval; enough of them approve the request.

        @return: the request after the vote.
        @raise ApprovalError: if C{approver} may not approve it (now).
        """
        entry = self._eligible(request_id, approver)
        request = entry.request
        if any(
            vote.approved and _voter(vote) == _voter(approver) for vote in request.votes
        ):
            raise ApprovalError(
                "already-approved",
                f"{approver.name} has already approved {request_id}",
            )
        vote = self._vote(approver, comment, approved=True)
        votes = (*request.votes, vote)
        approvers = [v for v in votes if v.approved]
        if len({_voter(v) for v in approvers}) >= request.approvals_required:
            names = ", ".join(v.name for v in approvers)
            return self._finish(
                request_id, "approved", f"approved by {names}", votes, "approved", vote
            )
        entry.request = attrs.evolve(request, votes=votes)
        self._emit("approved", entry.request, vote)
        return entry.request

    def deny(
        self, request_id: str, approver: Identity, comment: str = ""
    ) -> ApprovalRequest:
        """
        Deny the request on C{approver}'s word.

        @return: the request, denied.
        @raise ApprovalError: if C{approver} may not deny it (now).
        """
        entry = self._eligible(request_id, approver)
        vote = self._vote(approver, comment, approved=False)
        reason = f"denied by {approver.name}" + (f": {comment}" if comment else "")
        return self._finish(
            request_id,
            "denied",
            reason,
            (*entry.request.votes, vote),
            "denied",
            vote,
        )

    def cancel(self, request_id: str, reason: str) -> None:
        """
        Give up on a request whose session went away; nothing happens if it
        is not pending.
        """
        if request_id in self._pending:
            self._finish(request_id, "cancelled", reason)

    def deny_all(self, reason: str) -> None:
        """
        Deny every pending request, and stop the notifiers' deliveries
        still under way: the gateway is stopping.
        """
        for request_id in list(self._pending):
            if request_id in self._pending:
                self._finish(request_id, "denied", reason)
        for notifier in self._notifiers:
            stop = getattr(notifier, "stop", None)
            if stop is not None:
                stop()

    def observe(self, callback: Observer) -> None:
        """
        Call C{callback(event, request, approval)} on every event:
        C{"requested"}; C{"approved"} and C{"denied"} for each vote (with
        the L{Approval}); and C{"decided"} (with C{None}) once the request
        has ended, however it ended.  A vote that decides the request is
        reported with the request in its final state, then C{"decided"}.
        Exceptions it raises are logged and otherwise ignored.
        """
        self._observers.append(callback)

    def instructions(self, request: ApprovalRequest) -> str:
        """How to approve or deny C{request}, in one line."""
        return instructions(request, self._adminURL, self._approveOptions)

    def _eligible(self, request_id: str, approver: Identity) -> _Entry:
        entry = self._pending.get(request_id)
        if entry is None:
            decided = self.get(request_id)
            if decided is None:
                raise ApprovalError(
                    "not-found", f"there is no approval request {request_id}"
                )
            raise ApprovalError(
                "not-pending", f"approval request {request_id} is {decided.state}"
            )
        request = entry.request
        if _voter(approver) == _voter(request.requester):
            raise ApprovalError(
                "self-approval", "you cannot approve or deny your own request"
            )
        if "*" not in request.approvers and not set(approver.groups).intersection(
            request.approvers
        ):
            groups = ", ".join(request.approvers) or "nobody"
            raise ApprovalError(
                "not-an-approver",
                f"{approver.name} is not in a group that may decide "
                f"{request_id} ({groups})",
            )
        return entry

    def _vote(self, approver: Identity, comment: str, approved: bool) -> Approval:
        return Approval(
            subject=approver.subject,
            name=approver.name,
            comment=comment,
            at=self._clock.seconds(),
            approved=approved,
            issuer=approver.issuer,
        )

    def _expire(self, request_id: str) -> None:
        entry = self._pending.get(request_id)
        if entry is not None:
            entry.timer = None
            request = entry.request
            self._finish(
                request_id,
                "expired",
                f"timed out after {format_duration(request.expires - request.created)}",
            )

    def _finish(
        self,
        request_id: str,
        state: str,
        reason: str,
        votes: tuple[Approval, ...] | None = None,
        event: str | None = None,
        vote: Approval | None = None,
    ) -> ApprovalRequest:
        entry = self._pending.pop(request_id)
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        final = attrs.evolve(
            entry.request,
            state=state,
            reason=reason,
            votes=entry.request.votes if votes is None else votes,
        )
        entry.request = final
        self._recent.appendleft(final)
        if event is not None:
            self._emit(event, final, vote)
        self._emit("decided", final, None)
        self._log_decided(final)
        if not entry.result.called:
            entry.result.callback(Verdict(state == "approved", reason, final))
        return final

    def _log_decided(self, request: ApprovalRequest) -> None:
        from gatehouse.logs import emit, summary

        emit(
            "approval.decided",
            "Approval {approval_id} {state} after {waited} s: {reason}",
            LogLevel.info,
            logger=self._log,
            approval_id=request.id,
            session_id=request.session_id,
            subject=summary(request.requester.subject),
            target=request.target,
            rule=request.rule,
            state=request.state,
            reason=summary(request.reason or ""),
            voters=[summary(vote.subject) for vote in request.votes],
            waited=round(max(0.0, self._clock.seconds() - request.created), 3),
        )

    def _emit(
        self, event: str, request: ApprovalRequest, approval: Approval | None
    ) -> None:
        for observer in list(self._observers):
            try:
                observer(event, request, approval)
            except Exception:
                self._log.failure(
                    "Approval observer {observer!r} failed on {event} of {id}",
                    observer=observer,
                    event=event,
                    id=request.id,
                )


@implementer(IApprovalNotifier)
class LogNotifier:
    """
    Logs each request and how to decide it: the notifier when no other is
    configured.

    @param admin_url: the admin API's URL, for the instructions.
    @param approve_options: for the instructions, instead of C{admin_url}.
    """

    _log = Logger()

    def __init__(
        self,
        admin_url: str | None = None,
        approve_options: Sequence[str] | None = None,
    ) -> None:
        self._adminURL = admin_url
        self._approveOptions = approve_options

    def notify(self, request: ApprovalRequest) -> None:
        from gatehouse.logs import emit, summary

        emit(
            "approval.requested",
            "Approval {approval_id} needed: {display_name} ({subject}) on"
            " {protocol} target {target}, rule {rule}, {approvals_required}"
            " approval(s) from {approver_groups} within {timeout}: {commands};"
            " {instructions}",
            logger=self._log,
            approval_id=request.id,
            session_id=request.session_id,
            display_name=summary(request.requester.name),
            subject=summary(request.requester.subject),
            protocol=request.protocol,
            target=request.target,
            rule=request.rule,
            approvals_required=request.approvals_required,
            approver_groups=", ".join(request.approvers) or "nobody",
            timeout=format_duration(request.expires - request.created),
            commands=" / ".join(
                summary(command.text, _MAX_STATEMENT) for command in request.commands
            ),
            instructions=instructions(request, self._adminURL, self._approveOptions),
        )


_MAX_STATEMENT = 1000
_MAX_SHOWN_COMMANDS = 5
_MAX_ERROR_BODY = 512


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Escape text for Slack's mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def slackMessage(
    request: ApprovalRequest,
    admin_url: str | None = None,
    approve_options: Sequence[str] | None = None,
) -> dict[str, Any]:
    """
    A Slack-compatible message (C{text} and C{blocks}) about C{request}.
    """
    requester = request.requester
    who = requester.name
    if requester.subject != requester.name:
        who += f" ({requester.subject})"
    count = len(request.commands)
    noun = "command" if count == 1 else "commands"
    summary = (
        f"Approval needed ({request.id}): {who} wants to run {count} "
        f"{request.protocol} {noun} on {request.target}"
    )
    fields = [
        ("Approval", f"`{request.id}`"),
        ("Requester", who),
        ("Target", request.target),
        ("Protocol", request.protocol),
        ("Rule", request.rule),
        (
            "Approvals needed",
            f"{request.approvals_required} from {', '.join(request.approvers)}",
        ),
        (
            "Expires",
            f"{_timestamp(request.expires)} "
            f"(in {format_duration(request.expires - request.created)})",
        ),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(f"Approval needed: {request.id}", 150),
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _escape(summary)},
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"}
                for name, value in fields
            ],
        },
    ]
    for command in request.commands[:_MAX_SHOWN_COMMANDS]:
        text = _truncate(command.text, _MAX_STATEMENT)
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"```{_escape(text)}```"},
            }
        )
    if count > _MAX_SHOWN_COMMANDS:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"and {count - _MAX_SHOWN_COMMANDS} more",
                    }
                ],
            }
        )
    approve = instructions(request, admin_url, approve_options)
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(approve)}}
    )
    return {"text": _escape(f"{summary}; {approve}"), "blocks": blocks}


@implementer(IApprovalNotifier)
class WebhookNotifier:
    """
    POSTs a Slack-compatible JSON message about each request to a webhook.

    Delivery is retried on connection errors, timeouts and HTTP 5xx and 429
    with exponential backoff, and abandoned (with a log line) after
    C{retries} retries; other HTTP errors are not retried.

    @param reactor: schedules retries and timeouts; also connects, unless
        C{agent} is given.
    @param url: the webhook (C{http} or C{https}).  It is a secret for many
        services, so only its scheme, host and port are logged.
    @param agent: the L{IAgent} to POST with.
    @param retries: how many times to try again after the first attempt.
    @param backoff: seconds before the first retry; doubled for each next one.
    @param max_backoff: the longest wait between attempts.
    @param timeout: seconds each attempt may take.
    @param headers: extra request headers (for example C{Authorization}).
    @param admin_url: the admin API's URL, for the instructions.
    @param approve_options: for the instructions, instead of C{admin_url}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        agent: IAgent | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60,
        timeout: float = 10,
        headers: Mapping[str, str] | None = None,
        admin_url: str | None = None,
        approve_options: Sequence[str] | None = None,
    ) -> None:
        parsed = DecodedURL.from_text(url)
        self._url = check_url(parsed.to_uri().to_text())
        self._where = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
        self._reactor = reactor
        self._client = HTTPClient(reactor, agent=agent)
        self._retries = max(0, retries)
        self._backoff = backoff
        self._maxBackoff = max_backoff
        self._timeout = timeout
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._adminURL = admin_url
        self._approveOptions = approve_options
        self._deliveries: set[Deferred[bool]] = set()

    def notify(self, request: ApprovalRequest) -> None:
        self.deliver(request)

    def deliver(self, request: ApprovalRequest) -> Deferred[bool]:
        """
        Send the message about C{request}, retrying as configured.

        @return: fires with C{True} once delivered, C{False} if abandoned;
            never fails.
        """
        message = slackMessage(request, self._adminURL, self._approveOptions)
        body = json.dumps(message).encode("utf-8")
        delivery = Deferred.fromCoroutine(self._deliver(request.id, body))
        delivery.addErrback(self._bug, request.id)
        if not delivery.called:
            self._deliveries.add(delivery)
            delivery.addBoth(self._done, delivery)
        return delivery

    def stop(self) -> None:
        """Abandon every delivery in progress."""
        for delivery in list(self._deliveries):
            delivery.cancel()

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number C{retry} (from 1)."""
        return float(min(self._backoff * 2 ** (retry - 1), self._maxBackoff))

    async def _deliver(self, requestID: str, body: bytes) -> bool:
        for attempt in range(self._retries + 1):
            if attempt:
                delay = self.delay(attempt)
                self._log.info(
                    "Retrying approval {id} webhook to {where} in {delay}s",
                    id=requestID,
                    where=self._where,
                    delay=delay,
                )
                await deferLater(self._reactor, delay)
            try:
                code, start = await self._post(body)
            except CancelledError:
                return False
            except Exception as e:
                problem, retry = describe_error(e), True
            else:
                if 200 <= code < 300:
                    self._log.info(
                        "Approval {id} webhook delivered to {where}",
                        id=requestID,
                        where=self._where,
                    )
                    return True
                problem = f"HTTP status {code}"
                if start:
                    problem += ": " + start.decode("utf-8", "replace")
                retry = code == 429 or code >= 500
            self._log.warn(
                "Approval {id} webhook to {where} failed (attempt {attempt}): "
                "{problem}",
                id=requestID,
                where=self._where,
                attempt=attempt + 1,
                problem=problem,
            )
            if not retry:
                break
        self._log.error(
            "Gave up delivering the approval {id} webhook to {where} after "
            "{attempts} attempt(s)",
            id=requestID,
            where=self._where,
            attempts=attempt + 1,
        )
        return False

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        response = await self._client.request(
            b"POST",
            self._url,
            headers=self._headers,
            body=body,
            timeout=self._timeout,
            max_body=_MAX_ERROR_BODY,
            truncate=True,
        )
        return response.code, response.body

    def _bug(self, failure: Failure, requestID: str) -> bool:
        if not failure.check(CancelledError):
            self._log.failure(
                "Bug delivering the approval {id} webhook", failure, id=requestID
            )
        return False

    def _done(self, result: bool, delivery: Deferred[bool]) -> bool:
        self._deliveries.discard(delivery)
        return result
