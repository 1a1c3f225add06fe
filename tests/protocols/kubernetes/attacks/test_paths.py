"""
Many spellings of three dangerous requests, judged by the policy of
L{tests.protocols.kubernetes.policy}: deleting the namespace C{prod}
(rule C{no-namespace-delete}), reading a Secret in C{kube-system}
(C{no-kube-system-secrets}) and exec into a pod in C{prod}
(C{prod-exec}, a review).

Each spelling is either classified as the API server reads it, and then
the rule catches it (L{CAUGHT}), or refused as ambiguous before any rule
is asked (L{REFUSED}: the client gets a 400 or 405 Status).  Spellings
kube-apiserver reads as something harmless are in L{HARMLESS}, with the
reading the test checks.

C{X-HTTP-Method-Override} (and C{X-HTTP-Method}, C{X-Method-Override}) is
not honoured by kube-apiserver: a POST stays a POST whatever the header
says, so gatehouse classifies the request line's method, and a POST to
C{namespaces/prod} is a C{create} (the server answers 405), not a delete.

Mutation check, by hand (each group of refusals of
L{gatehouse.protocols.kubernetes.request} replaced by C{if False}, this
corpus run, the file restored):

  - all refusals disabled at once: all 98 L{REFUSED} spellings classify
    (most to a request no rule catches: C{Namespaces/prod},
    C{/API/v1/...} as a non-resource path, a watch for a DELETE) or crash.
  - one group at a time: the method and path-prefix checks let the
    C{method} and C{prefix} cases through; the lowercase/DNS checks the
    C{case} cases and the look-alike C{unicode} ones (C{Prod}, C{Secrets}
    become names the rules do not know); the trailing-slash refusal the
    C{trailing} cases (read as the list or deletecollection RequestInfo
    sees, while the router sees a named request); the query checks the
    C{query} cases (C{watch=yes} and C{watch=} become lists though Go
    watches); the raw-target checks C{*}, a relative path and a C{;} in
    the query; the decoded-segment checks C{/api%2Fv1%2F...}.
  - the C{encoded}, C{dots}, C{slashes}, C{backslash}, C{semicolon} and
    C{#} spellings are each refused by two independent checks (the raw
    character set of the target, and the decoded segment or name
    checks): they pass only when both are removed.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.request import AmbiguousRequest, classify

from ..policy import decide, load, with_kubernetes

NS = "no-namespace-delete"
SECRET = "no-kube-system-secrets"
EXEC = "prod-exec"

#: (method, target, the rule that must catch it)
CAUGHT: list[tuple[str, bytes, str]] = [
    # deleting the namespace prod
    ("DELETE", b"/api/v1/namespaces/prod", NS),
    ("DELETE", b"/api/v1/namespaces/%70rod", NS),
    ("DELETE", b"/api/v1/%6eamespaces/prod", NS),
    ("DELETE", b"/api/v1/namespaces/prod?dryRun=All", NS),
    ("DELETE", b"/api/v1/namespaces/prod?propagationPolicy=Foreground", NS),
    ("DELETE", b"/api/v1/namespaces", NS),
    ("DELETE", b"/api/v1/namespaces?labelSelector=team%3Dx", NS),
    ("DELETE", b"/api/v2/namespaces/prod", NS),
    ("DELETE", b"/apis/core/v1/namespaces/prod", NS),
    ("DELETE", b"/api/v1/namespaces/prod?x=%2F..%2F", NS),
    # reading a Secret in kube-system
    ("GET", b"/api/v1/namespaces/kube-system/secrets/admin-token", SECRET),
    ("HEAD", b"/api/v1/namespaces/kube-system/secrets/admin-token", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/secrets", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=true", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=1", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=false", SECRET),
    ("GET", b"/api/v1/watch/namespaces/kube-system/secrets", SECRET),
    ("GET", b"/api/v1/watch/namespaces/kube-system/secrets/admin-token", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/%73ecrets/admin-token", SECRET),
    ("GET", b"/api/v1/namespaces/kube%2Dsystem/secrets/admin-token", SECRET),
    ("GET", b"/api/v1/namespaces/kube-system/secrets/admin-token?watch=true", SECRET),
    ("GET", b"/api/v1/secrets", SECRET),
    ("GET", b"/api/v1/secrets?watch=true", SECRET),
    ("GET", b"/api/v1/watch/secrets", SECRET),
    ("GET", b"/api/v1/secrets?fieldSelector=metadata.namespace%3Dkube-system", SECRET),
    (
        "GET",
        b"/api/v1/namespaces/kube-system/secrets"
        b"?fieldSelector=metadata.name%3Dadmin-token",
        SECRET,
    ),
    ("PATCH", b"/api/v1/namespaces/kube-system/secrets/admin-token", SECRET),
    ("DELETE", b"/api/v1/namespaces/kube-system/secrets", SECRET),
    # exec into prod
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh", EXEC),
    ("GET", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh", EXEC),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/%65xec?command=sh", EXEC),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh&watch=true", EXEC),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec", EXEC),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/attach?stdin=true", EXEC),
    ("GET", b"/api/v1/namespaces/prod/pods/web-7/attach?stdin=1&tty=1", EXEC),
    ("POST", b"/api/v1/namespaces/prod/pods/a.b/exec?command=sh", EXEC),
    ("POST", b"/apis/x/v1/namespaces/prod/pods/web-7/exec?command=sh", EXEC),
]

#: (method, target, why): refused before any rule is asked.
REFUSED: list[tuple[str, bytes, str]] = [
    # methods
    ("delete", b"/api/v1/namespaces/prod", "method"),
    ("Delete", b"/api/v1/namespaces/prod", "method"),
    ("PURGE", b"/api/v1/namespaces/prod", "method"),
    ("OPTIONS", b"/api/v1/namespaces/prod", "method"),
    ("TRACE", b"/api/v1/namespaces/kube-system/secrets/admin-token", "method"),
    ("PUT", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh", "method"),
    ("HEAD", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh", "method"),
    ("DELETE", b"/api/v1/watch/namespaces/prod", "method"),
    # target forms
    ("DELETE", b"http://gw/api/v1/namespaces/prod", "target"),
    ("DELETE", b"https://kube/api/v1/namespaces/prod", "target"),
    ("DELETE", b"*", "target"),
    ("DELETE", b"api/v1/namespaces/prod", "target"),
    ("DELETE", b"/api/v1/namespaces/prod#frag", "target"),
    ("DELETE", b"/api/v1/namespaces/prod%23frag", "encoded"),
    # case
    ("DELETE", b"/API/v1/namespaces/prod", "case"),
    ("DELETE", b"/api/V1/namespaces/prod", "case"),
    ("DELETE", b"/api/v1/Namespaces/prod", "case"),
    ("DELETE", b"/api/v1/NAMESPACES/prod", "case"),
    ("DELETE", b"/api/v1/namespaces/Prod", "case"),
    ("DELETE", b"/api/v1/namespaces/PROD", "case"),
    ("GET", b"/api/v1/namespaces/Kube-System/secrets/admin-token", "case"),
    ("GET", b"/api/v1/namespaces/kube-system/Secrets/admin-token", "case"),
    ("GET", b"/api/v1/namespaces/kube-system/SECRETS", "case"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/Exec?command=sh", "case"),
    ("POST", b"/api/v1/namespaces/prod/Pods/web-7/exec?command=sh", "case"),
    ("POST", b"/api/v1/namespaces/%50rod/pods/web-7/exec?command=sh", "case"),
    # percent-encoded separators
    ("DELETE", b"/api/v1/namespaces%2Fprod", "encoded"),
    ("DELETE", b"/api/v1/namespaces%2fprod", "encoded"),
    ("DELETE", b"/api%2Fv1%2Fnamespaces%2Fprod", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%2F", "encoded"),
    ("DELETE", b"/api/v1/namespaces/x%2F..%2Fprod", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%252F", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%5C", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%3Bx", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%3Fx", "encoded"),
    ("GET", b"/api/v1/namespaces/kube-system%2Fsecrets/admin-token", "encoded"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets%2Fadmin-token", "encoded"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7%2Fexec?command=sh", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%00", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%0A", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%20", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%", "encoded"),
    ("DELETE", b"/api/v1/namespaces/prod%2", "encoded"),
    ("DELETE", b"/api/v1/namespaces/pro%g0", "encoded"),
    # non-ASCII and look-alikes
    ("DELETE", b"/api/v1/namespaces/%EF%BD%90rod", "unicode"),
    ("DELETE", b"/api/v1/namespaces/pr%C3%B6d", "unicode"),
    ("DELETE", b"/api/v1/namespaces/prod%C0%AF", "unicode"),
    ("DELETE", b"/api/v1/namespaces/prod%FF", "unicode"),
    ("DELETE", b"/api/v1/namespaces/\xef\xbd\x90rod", "unicode"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets/%E2%80%AEadmin", "unicode"),
    # slashes and dot segments
    ("DELETE", b"//api/v1/namespaces/prod", "slashes"),
    ("DELETE", b"/api//v1/namespaces/prod", "slashes"),
    ("DELETE", b"/api/v1//namespaces/prod", "slashes"),
    ("DELETE", b"/api/v1/namespaces//prod", "slashes"),
    ("GET", b"/api/v1/namespaces/kube-system//secrets/admin-token", "slashes"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7//exec?command=sh", "slashes"),
    ("DELETE", b"/api/v1/namespaces/x/../prod", "dots"),
    ("DELETE", b"/api/v1/./namespaces/prod", "dots"),
    ("DELETE", b"/api/v1/namespaces/prod/.", "dots"),
    ("DELETE", b"/api/v1/namespaces/x/%2e%2e/prod", "dots"),
    ("DELETE", b"/api/v1/namespaces/x/%2E./prod", "dots"),
    ("DELETE", b"/api/v1/namespaces/x/.%2e/prod", "dots"),
    ("GET", b"/api/v1/namespaces/shop/../kube-system/secrets/x", "dots"),
    ("GET", b"/api/v1/namespaces/kube-system/configmaps/../secrets/x", "dots"),
    ("POST", b"/api/v1/namespaces/dev/../prod/pods/web-7/exec", "dots"),
    ("DELETE", b"/api/v1/namespaces\\prod", "backslash"),
    ("DELETE", b"/api\\v1/namespaces/prod", "backslash"),
    # path parameters
    ("DELETE", b"/api/v1/namespaces/prod;x=1", "semicolon"),
    ("DELETE", b"/api/v1/namespaces;/prod", "semicolon"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets;jsessionid=1/x", "semicolon"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec;x?command=sh", "semicolon"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?x=1;watch=true", "semicolon"),
    # trailing slashes
    ("DELETE", b"/api/v1/namespaces/prod/", "trailing"),
    ("DELETE", b"/api/v1/namespaces/", "trailing"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets/", "trailing"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets/admin-token/", "trailing"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec/?command=sh", "trailing"),
    # query spellings
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=yes", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=TRUE", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?Watch=true", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=0&watch=1", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=%00", "query"),
    ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=tru%65%00", "query"),
    ("DELETE", b"/api/v1/namespaces/prod?dryRun=All&dryRun=None", "query"),
    ("DELETE", b"/api/v1/namespaces/prod?dryRun=all", "query"),
    ("DELETE", b"/api/v1/namespaces/prod?DryRun=All", "query"),
    ("DELETE", b"/api/v1/namespaces/prod?dryRun=%zz", "query"),
    (
        "POST",
        b"/api/v1/namespaces/prod/pods/web-7/exec?container=a&container=b",
        "query",
    ),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec?stdin=1&stdin=0", "query"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh%00-c", "query"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec?tty=yes", "query"),
    # retired and malformed prefixes
    ("POST", b"/api/v1/proxy/namespaces/prod/pods/web-7/exec", "prefix"),
    ("GET", b"/api/v1/proxy/namespaces/kube-system/secrets/x", "prefix"),
    ("GET", b"/api/v1/watch", "prefix"),
    ("POST", b"/api/v1/namespaces/prod/pods/web-7/exec/x?command=sh", "prefix"),
    ("GET", b"/api/v1/watch/namespaces/prod/pods/web-7/exec", "prefix"),
]

#: (method, target, verb, resource): what kube-apiserver does instead.
HARMLESS: list[tuple[str, bytes, str, str]] = [
    # X-HTTP-Method-Override is ignored by the API server: a POST creates
    # (and a named POST to namespaces is refused by the server with 405).
    ("POST", b"/api/v1/namespaces/prod", "create", "namespaces"),
    ("GET", b"/api/v1/namespaces/prod", "get", "namespaces"),
    # "Watch" is not "watch" to Go: refused above; "watch" on a named GET is
    # ignored by the server (a get).
    ("GET", b"/api/v1/namespaces/prod/pods/web-7?watch=true", "get", "pods"),
    # Secrets have no status subresource (404); as in RBAC, "secrets" is
    # not "secrets/status": a rule naming secrets/* would take it.
    ("GET", b"/api/v1/namespaces/kube-system/secrets/x/status", "get", "secrets"),
]


class PathSpellingTests(SynchronousTestCase):
    """Every spelling is caught by its rule or refused."""

    def setUp(self) -> None:
        with_kubernetes(self)
        self.policy, problems = load()
        self.assertEqual(problems, [])

    def test_caught(self) -> None:
        for method, target, rule in CAUGHT:
            decision = decide(self.policy, method, target)
            self.assertEqual(decision.rule, rule, (method, target))
            self.assertIn(decision.action, ("deny", "review"))

    def test_caught_for_agents_too(self) -> None:
        """The agents' read-only rule never lets one through first."""
        for method, target, rule in CAUGHT:
            self.assertEqual(
                decide(self.policy, method, target, ("agents",)).rule,
                rule,
                (method, target),
            )

    def test_refused(self) -> None:
        for method, target, why in REFUSED:
            with self.assertRaises(AmbiguousRequest, msg=(method, target, why)):
                classify(method, target)

    def test_harmless(self) -> None:
        for method, target, verb, resource in HARMLESS:
            request = classify(method, target)
            self.assertEqual((request.verb, request.resource), (verb, resource))
            self.assertEqual(decide(self.policy, method, target).rule, "default")

    def test_same_description(self) -> None:
        """Caught spellings describe the same request as the plain one."""
        plain = {
            NS: "delete namespaces/prod",
            SECRET: "get secrets/admin-token -n kube-system",
        }
        for method, target, rule in CAUGHT:
            plain_method = method in ("GET", "DELETE") and b"?" not in target
            if rule in plain and plain_method and target.startswith(b"/api/v1/n"):
                if target.endswith((b"/prod", b"/admin-token")):
                    self.assertEqual(
                        classify(method, target).describe(), plain[rule], target
                    )
