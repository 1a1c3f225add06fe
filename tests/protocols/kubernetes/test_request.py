"""
Kubernetes API requests classified as kube-apiserver's RequestInfo reads
them (L{gatehouse.protocols.kubernetes.request}).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.request import (
    VERBS,
    AmbiguousRequest,
    KubeRequest,
    classify,
)


def fields(request: KubeRequest) -> tuple[object, ...]:
    """The description's fields, for compact assertions."""
    return (
        request.verb,
        request.api_verb,
        request.group,
        request.version,
        request.namespace,
        request.resource,
        request.subresource,
        request.name,
    )


class ResourceRequestTests(SynchronousTestCase):
    """Paths to resources, as RequestInfo derives them."""

    def check(self, method: str, target: bytes, expected: str) -> KubeRequest:
        """
        Classify; C{expected} lists verb, API verb, group, version,
        namespace, resource, subresource and name (C{-}: empty).
        """
        request = classify(method, target)
        self.assertTrue(request.resource_request, target)
        words = tuple("" if w == "-" else w for w in expected.split())
        self.assertEqual(fields(request), words, target)
        return request

    def test_core_namespaced(self) -> None:
        self.check(
            "GET", b"/api/v1/namespaces/shop/pods", "list list - v1 shop pods - -"
        )
        self.check(
            "GET", b"/api/v1/namespaces/shop/pods/web", "get get - v1 shop pods - web"
        )
        request = self.check(
            "POST", b"/api/v1/namespaces/shop/pods", "create create - v1 shop pods - -"
        )
        self.assertEqual(request.api_prefix, "api")
        self.assertFalse(request.upgrade)

    def test_groups(self) -> None:
        request = self.check(
            "DELETE",
            b"/apis/apps/v1/namespaces/shop/deployments/web",
            "delete delete apps v1 shop deployments - web",
        )
        self.assertEqual(request.api_prefix, "apis")
        self.assertEqual(request.describe(), "delete deployments.apps/web -n shop")
        self.check(
            "PUT",
            b"/apis/rbac.authorization.k8s.io/v1/clusterroles/system:ctl:x",
            "update update rbac.authorization.k8s.io v1 - clusterroles - system:ctl:x",
        )

    def test_cluster_scoped_and_all_namespaces(self) -> None:
        request = self.check("GET", b"/api/v1/nodes", "list list - v1 - nodes - -")
        self.assertEqual(request.describe(), "list nodes")
        request = self.check("GET", b"/api/v1/pods", "list list - v1 - pods - -")
        self.assertEqual(request.describe(), "list pods -A")

    def test_namespace_itself(self) -> None:
        """The namespace object has its own name as namespace (as RBAC sees it)."""
        request = self.check(
            "DELETE",
            b"/api/v1/namespaces/prod",
            "delete delete - v1 prod namespaces - prod",
        )
        self.assertEqual(request.describe(), "delete namespaces/prod")
        self.check(
            "PUT",
            b"/api/v1/namespaces/prod/status",
            "update update - v1 prod namespaces status prod",
        )
        self.check(
            "PUT",
            b"/api/v1/namespaces/prod/finalize",
            "update update - v1 prod namespaces finalize prod",
        )
        self.check("GET", b"/api/v1/namespaces", "list list - v1 - namespaces - -")

    def test_subresources(self) -> None:
        self.check(
            "PATCH",
            b"/apis/apps/v1/namespaces/shop/deployments/web/scale",
            "patch patch apps v1 shop deployments scale web",
        )
        request = self.check(
            "GET",
            b"/api/v1/namespaces/shop/pods/web/log?container=app&follow=true",
            "log get - v1 shop pods log web",
        )
        self.assertEqual(request.describe(), "log shop/web -c app -f")

    def test_exec(self) -> None:
        """exec by POST (SPDY) and GET (WebSocket); the command from the query."""
        target = (
            b"/api/v1/namespaces/shop/pods/web-7/exec?command=%2Fbin%2Fsh"
            b"&command=-c&command=echo+a%3Bb&container=app&stdin=true&tty=true"
        )
        post = self.check(
            "POST",
            target,
            "exec create - v1 shop pods exec web-7",
        )
        get = self.check(
            "GET",
            target,
            "exec get - v1 shop pods exec web-7",
        )
        for request in (post, get):
            self.assertTrue(request.upgrade)
            self.assertEqual(request.command, ("/bin/sh", "-c", "echo a;b"))
            self.assertEqual(request.container, "app")
            self.assertTrue(request.flag("tty"))
            self.assertFalse(request.flag("stdout"))
        self.assertEqual(
            post.describe(), "exec shop/web-7 -c app: /bin/sh -c 'echo a;b'"
        )
        short = classify(
            "POST",
            b"/api/v1/namespaces/shop/pods/web-7/exec?command=%2Fbin%2Fsh&container=app",
        )
        self.assertEqual(short.describe(), "exec shop/web-7 -c app: /bin/sh")

    def test_description_escapes(self) -> None:
        """Control characters of a command are shown escaped, on one line."""
        request = classify(
            "POST",
            b"/api/v1/namespaces/a/pods/b/exec?command=sh&command=-c"
            b"&command=echo+x%0Arm+-rf+%2F%1B%5B2J",
        )
        self.assertEqual(request.command, ("sh", "-c", "echo x\nrm -rf /\x1b[2J"))
        self.assertEqual(
            request.describe(), "exec a/b: sh -c 'echo x\\nrm -rf /\\x1b[2J'"
        )
        self.assertTrue(request.flag("stdin") is False)
        self.assertTrue(classify("GET", b"/api/v1/pods?pretty=1").flag("pretty"))

    def test_attach_portforward(self) -> None:
        attach = self.check(
            "POST",
            b"/api/v1/namespaces/shop/pods/web/attach?container=app&stdin=1",
            "attach create - v1 shop pods attach web",
        )
        self.assertTrue(attach.upgrade)
        forward = self.check(
            "GET",
            b"/api/v1/namespaces/shop/pods/web/portforward?ports=8080&ports=9090",
            "portforward get - v1 shop pods portforward web",
        )
        self.assertEqual(forward.describe(), "portforward shop/web 8080,9090")

    def test_proxy(self) -> None:
        """The proxy subresource keeps the rest of the path; the query passes."""
        request = self.check(
            "POST",
            b"/api/v1/namespaces/shop/pods/web:8080/proxy/api/run?x=1&x=2",
            "proxy create - v1 shop pods proxy web:8080",
        )
        self.assertEqual(request.rest, "/api/run")
        self.assertEqual(request.values("x"), ("1", "2"))
        self.assertFalse(request.upgrade)
        root = classify("GET", b"/api/v1/namespaces/shop/services/web/proxy/")
        self.assertEqual((root.verb, root.rest), ("proxy", "/"))
        node = classify("GET", b"/api/v1/nodes/n1/proxy/metrics")
        self.assertEqual(
            (node.verb, node.resource, node.name, node.rest),
            ("proxy", "nodes", "n1", "/metrics"),
        )

    def test_watch(self) -> None:
        for target in (
            b"/api/v1/namespaces/shop/pods?watch=true",
            b"/api/v1/namespaces/shop/pods?watch=1&resourceVersion=10",
            b"/api/v1/watch/namespaces/shop/pods",
        ):
            self.check(
                "GET",
                target,
                "watch watch - v1 shop pods - -",
            )
        for target in (
            b"/api/v1/namespaces/shop/pods?watch=false",
            b"/api/v1/namespaces/shop/pods?watch=0",
        ):
            self.check(
                "GET",
                target,
                "list list - v1 shop pods - -",
            )
        self.check(
            "GET",
            b"/apis/apps/v1/watch/namespaces/shop/deployments/web",
            "watch watch apps v1 shop deployments - web",
        )
        # A named GET ignores watch, as the API server does.
        self.check(
            "GET",
            b"/api/v1/namespaces/shop/pods/web?watch=true",
            "get get - v1 shop pods - web",
        )

    def test_field_selector_names(self) -> None:
        """A list or watch pinned to one name carries it (RequestInfo does)."""
        request = self.check(
            "GET",
            b"/api/v1/namespaces/kube-system/secrets?fieldSelector=metadata.name%3Dtls&watch=true",
            "watch watch - v1 kube-system secrets - tls",
        )
        self.assertEqual(
            request.describe(),
            "watch secrets/tls -n kube-system --field-selector metadata.name=tls",
        )
        self.assertEqual(
            classify(
                "GET",
                b"/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name%3D%3Dw",
            ).name,
            "w",
        )
        self.assertEqual(
            classify("GET", b"/api/v1/pods?fieldSelector=metadata.name%21%3Dw").name, ""
        )
        # Not for deletecollection: RequestInfo takes it only for get.
        request = classify(
            "DELETE", b"/api/v1/namespaces/shop/pods?fieldSelector=metadata.name%3Dw"
        )
        self.assertEqual((request.verb, request.name), ("deletecollection", ""))

    def test_deletecollection(self) -> None:
        request = self.check(
            "DELETE",
            b"/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb",
            "deletecollection deletecollection - v1 shop pods - -",
        )
        self.assertEqual(request.describe(), "deletecollection pods -n shop -l app=web")

    def test_head_reads_as_get(self) -> None:
        self.check(
            "HEAD",
            b"/api/v1/namespaces/kube-system/secrets/x",
            "get get - v1 kube-system secrets - x",
        )
        self.check(
            "HEAD",
            b"/api/v1/namespaces/kube-system/secrets",
            "list list - v1 kube-system secrets - -",
        )

    def test_query_parameters(self) -> None:
        request = classify(
            "PATCH",
            b"/apis/apps/v1/namespaces/shop/deployments/web?dryRun=All"
            b"&fieldManager=kubectl-client-side-apply&fieldValidation=Strict&force=true",
        )
        self.assertTrue(request.dry_run)
        self.assertEqual(request.field_manager, "kubectl-client-side-apply")
        self.assertEqual(request.value("fieldValidation"), "Strict")
        self.assertEqual(
            request.describe(), "patch deployments.apps/web -n shop --dry-run=server"
        )
        plain = classify("PATCH", b"/apis/apps/v1/namespaces/shop/deployments/web")
        self.assertEqual((plain.dry_run, plain.field_manager), (False, None))

    def test_percent_escapes_decoded(self) -> None:
        """Escapes of ordinary characters mean what Go decodes them to."""
        request = classify("GET", b"/api/v1/namespaces/kube-system/%73ecrets/%61")
        self.assertEqual((request.resource, request.name), ("secrets", "a"))
        self.assertEqual(request.path, "/api/v1/namespaces/kube-system/secrets/a")
        self.assertEqual(
            request.canonical_target(), b"/api/v1/namespaces/kube-system/secrets/a"
        )

    def test_canonical_target(self) -> None:
        request = classify(
            "POST", b"/api/v1/namespaces/a/pods/b/exec?command=echo+x%26y&stdin=true"
        )
        self.assertEqual(
            request.canonical_target(),
            b"/api/v1/namespaces/a/pods/b/exec?command=echo%20x%26y&stdin=true",
        )
        self.assertEqual(
            classify("POST", request.canonical_target()).command, ("echo x&y",)
        )


class NonResourceTests(SynchronousTestCase):
    """Discovery and other non-resource paths: the verb is the method."""

    def test_paths(self) -> None:
        for path in (
            b"/version",
            b"/api",
            b"/api/v1",
            b"/apis",
            b"/apis/apps",
            b"/apis/apps/v1",
            b"/openapi/v2",
            b"/openapi/v3",
            b"/openapi/v3/apis/apps/v1?hash=ABC",
            b"/healthz",
            b"/livez",
            b"/readyz",
            b"/metrics",
            b"/",
            b"/logs/",
            b"/.well-known/openid-configuration",
        ):
            request = classify("GET", path)
            self.assertFalse(request.resource_request, path)
            self.assertEqual(
                (request.verb, request.api_verb, request.api_prefix, request.resource),
                ("get", "get", "", ""),
            )
            self.assertEqual(request.describe(), f"get {path.split(b'?')[0].decode()}")
        self.assertEqual(classify("POST", b"/healthz").verb, "post")
        self.assertEqual(classify("HEAD", b"/version").verb, "head")


class RefusedTests(SynchronousTestCase):
    """Spellings the API server could read otherwise are refused (400/405)."""

    def refused(self, method: str, target: bytes, code: int = 400) -> None:
        with self.assertRaises(AmbiguousRequest, msg=target) as caught:
            classify(method, target)
        self.assertEqual(caught.exception.code, code, target)
        self.assertTrue(str(caught.exception))

    def test_methods(self) -> None:
        for method in ("TRACE", "CONNECT", "OPTIONS", "get", "PROPFIND", ""):
            self.refused(method, b"/api/v1/pods", 405)
        self.refused("DELETE", b"/api/v1/watch/namespaces/a/pods/b", 405)
        self.refused("PUT", b"/api/v1/namespaces/a/pods/b/exec", 405)
        self.refused("HEAD", b"/api/v1/namespaces/a/pods/b/exec", 405)
        self.refused("POST", b"/api/v1/namespaces/a/pods/b/log", 405)

    def test_targets(self) -> None:
        for target in (
            b"http://example/api/v1/pods",
            b"*",
            b"",
            b"api/v1/pods",
            b"/api/v1/pods#x",
            b"/api/v1/namespaces/a\\pods",
            b"/api/v1//pods",
            b"//api/v1/pods",
            b"/api/v1/pods/",
            b"/api/v1/namespaces/a/pods/b/",
            b"/api/",
            b"/apis/apps/v1/",
            b"/api/v1/namespaces/a/pods;x",
            b"/api/v1/pods?watch=1;x=2",
            b"/api/v1/namespaces/a/pods/%2e%2e/b",
            b"/api/v1/namespaces/a/pods/./b",
            b"/api/v1/namespaces/a/pods/../b",
            b"/api/v1/namespaces/a%2Fpods",
            b"/api/v1/namespaces/a/pods/b%00",
            b"/api/v1/namespaces/a/pods/b%0a",
            b"/api/v1/namespaces/a/pods/b%20c",
            b"/api/v1/namespaces/a/pods/b%5cc",
            b"/api/v1/namespaces/a/pods/b%25",
            b"/api/v1/namespaces/a/pods/%ff",
            b"/api/v1/namespaces/a/pods/%zz",
            b"/api/v1/namespaces/a/pods/b c",
            b"/api/v1/namespaces/a/pods/\xc3\xa9",
            b"/api/v1/namespaces/a/pods?command=%00",
            b"/api/v1/namespaces/a/pods?x=%zz",
        ):
            self.refused("GET", target)

    def test_names(self) -> None:
        for target in (
            b"/api/v1/namespaces/Prod/pods",
            b"/api/v1/namespaces/prod_1/pods",
            b"/api/v1/namespaces/" + b"a" * 64 + b"/pods",
            b"/api/v1/namespaces/prod/Pods",
            b"/api/v1/namespaces/prod/pods/a/Exec",
            b"/apis/Apps/v1/deployments",
            b"/apis/apps/V1/deployments",
            b"/apis/APPS",
            b"/api/V1",
            b"/api/v1/namespaces/prod/pods/a/exec/x",
            b"/api/v1/proxy/namespaces/prod/pods/a",
            b"/api/v1/watch",
            b"/api/v1/watch/namespaces/a/pods/b/status",
            b"/api/v1/pods?fieldSelector=metadata.name%3D..",
            b"/api/v1/pods?fieldSelector=metadata.name+%3D+x",
            b"/api/v1/pods?fieldSelector=metadata.name%3Da%5C,b",
        ):
            self.refused("GET", target)

    def test_query(self) -> None:
        for query in (
            b"watch=true&watch=false",
            b"watch=",
            b"watch",
            b"watch=yes",
            b"watch=True",
            b"Watch=true",
            b"WATCH=1",
            b"dryRun=All&dryRun=All",
            b"dryRun=all",
            b"dryRun=",
            b"fieldManager=a&fieldManager=b",
            b"container=a&container=b",
            b"stdin=true&stdin=false",
            b"tty=",
            b"labelSelector=a&labelSelector=b",
            b"fieldSelector=a%3Db&fieldSelector=c%3Dd",
            b"=x",
        ):
            self.refused("GET", b"/api/v1/namespaces/a/pods?" + query)

    def test_repeatable(self) -> None:
        """command and ports repeat; empty pieces are skipped as Go does."""
        request = classify(
            "POST", b"/api/v1/namespaces/a/pods/b/exec?command=ls&&command=-l&"
        )
        self.assertEqual(request.command, ("ls", "-l"))


class FuzzTests(SynchronousTestCase):
    """Any input classifies or is refused; nothing else escapes."""

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PATCH", "PUT", "X"]),
        st.lists(
            st.sampled_from(
                [
                    b"/",
                    b"api",
                    b"apis",
                    b"v1",
                    b"namespaces",
                    b"a",
                    b"pods",
                    b"watch",
                    b"exec",
                    b"proxy",
                    b"%2f",
                    b"%2e",
                    b".",
                    b"..",
                    b"?",
                    b"&",
                    b"=",
                    b"watch=1",
                    b"%",
                    b"\\",
                    b";",
                    b"+",
                    b"status",
                    b"log",
                    b"\xff",
                ]
            ),
            max_size=14,
        ),
    )
    def test_classify_or_refuse(self, method: str, pieces: list[bytes]) -> None:
        target = b"/" + b"".join(pieces)
        try:
            request = classify(method, target)
        except AmbiguousRequest:
            return
        self.assertIn(request.verb, VERBS)
        request.describe()
        # What the API server reads is read again the same way.
        again = classify(method, request.canonical_target())
        self.assertEqual(fields(again), fields(request))
        self.assertEqual(again.query, request.query)
