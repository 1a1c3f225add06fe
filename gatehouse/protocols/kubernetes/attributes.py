"""
What policy rules can say about Kubernetes API requests: the attributes
the C{kubernetes} adapter declares (L{gatehouse.policy.attributes}), and
the policy L{Command} of a L{KubeRequest} (L{commands_for}).

  - C{verb}: the gatehouse verb (get, list, watch, create, update, patch,
    delete, deletecollection, exec, attach, portforward, proxy, log; for
    non-resource paths the lowercase method).  Verbs are RBAC's, one per
    request, no implication between them: C{delete} does not cover
    C{deletecollection}, C{list} does not cover C{watch} (name both).
  - C{api_group} (alias C{group}): the API group; the core group is
    C{core}.
  - C{version}, C{container} (exec, attach, log), C{non_resource_url}
    (the path of a non-resource request, C{/healthz}, C{/version}).
  - C{resource}: as in RBAC, C{pods} is the pods themselves and
    C{pods/exec} their exec subresource: a rule on C{resource: pods} does
    not match C{pods/exec} (nor C{pods/log}, C{pods/status}).  Globs reach
    further: C{pods/*} is every subresource of pods, C{*} every resource
    and subresource.  A resource of a named group also answers to its
    kubectl name, C{deployments.apps} (C{deployments.apps/scale}).
  - C{subresource}: the subresource alone (C{exec}, C{log}, C{status});
    a request without one carries none (C{subresource: "*"} is "any
    subresource").  C{verb: exec} matches an exec whatever its resource.
  - C{namespace}: the request's namespace (a namespace object's own name
    for C{namespaces/NAME}, as RBAC sees it).  A cluster-scoped request
    carries none.  A list, watch or deletecollection across all
    namespaces carries C{all-namespaces}: it reads every namespace, so a
    rule guarding one namespace's objects must name it too
    (C{namespace: [kube-system, all-namespaces]}); C{*} matches it.
  - C{resource_name}: the object's name (C{name} is the rule's own), or
    the name a field selector pins (C{metadata.name=x}).  A list without
    one carries none: like RBAC's resourceNames, a rule on names does
    not limit lists.
  - C{text}: a regular expression searched in L{KubeRequest.describe}.
"""

from __future__ import annotations

from gatehouse.policy.attributes import (
    ANY,
    GLOB,
    REGEX,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.policy.rules import Command
from gatehouse.protocols.kubernetes.request import (
    CLUSTER_SCOPED,
    VERBS,
    KubeRequest,
)

__all__ = ["ALL_NAMESPACES", "CORE", "POLICY_ATTRIBUTES", "PROTOCOL", "commands_for"]

PROTOCOL = "kubernetes"
#: The API group rules call the core group (C{""} in the API).
CORE = "core"
#: The namespace a request across all namespaces carries.
ALL_NAMESPACES = "all-namespaces"

POLICY_ATTRIBUTES = PolicyAttributes(
    (
        PolicyAttribute(
            "verb",
            ANY,
            "kinds",
            VERBS,
            doc="get, list, watch, create, update, patch, delete, "
            "deletecollection, exec, attach, portforward, proxy, log "
            "(non-resource paths: the method)",
        ),
        PolicyAttribute(
            "api_group",
            GLOB,
            "api_group",
            aliases=("group",),
            doc="the API group (core for the core group)",
        ),
        PolicyAttribute("version", GLOB, "version", doc="the API version"),
        PolicyAttribute(
            "resource",
            GLOB,
            "resource",
            doc="resource or resource/subresource, as in RBAC (pods, pods/exec, "
            "deployments.apps)",
        ),
        PolicyAttribute(
            "subresource", GLOB, "subresource", doc="the subresource (exec, log, ...)"
        ),
        PolicyAttribute(
            "namespace",
            GLOB,
            "namespace",
            doc="the namespace (all-namespaces for a list across them)",
        ),
        PolicyAttribute(
            "resource_name",
            GLOB,
            "resource_name",
            aliases=("resource_names",),
            doc="the object's name",
        ),
        PolicyAttribute(
            "container", GLOB, "container", doc="the container of exec, attach, log"
        ),
        PolicyAttribute(
            "non_resource_url",
            GLOB,
            "non_resource_url",
            doc="the path of a non-resource request (/version, /healthz, ...)",
        ),
        PolicyAttribute(
            "text",
            REGEX,
            "normalized",
            doc="a regular expression searched in the request's description",
        ),
    )
)


def _namespaces(request: KubeRequest) -> tuple[str, ...]:
    if request.namespace:
        return (request.namespace,)
    collection = request.verb in ("list", "watch", "deletecollection")
    if collection and request.resource not in CLUSTER_SCOPED:
        return (ALL_NAMESPACES,)
    return ()


def _resources(request: KubeRequest) -> tuple[str, ...]:
    suffix = f"/{request.subresource}" if request.subresource else ""
    found = [request.resource + suffix]
    if request.group:
        found.append(f"{request.resource}.{request.group}{suffix}")
    return tuple(found)


def commands_for(request: KubeRequest) -> tuple[Command, ...]:
    """
    The policy commands of one request (one): kind = the verb, objects =
    C{resource/name} (kubectl's spelling), the resource and
    C{namespaces/NS} (for the index), the attributes above as extras.
    """
    text = request.describe()
    if not request.resource_request:
        return (
            Command(
                PROTOCOL,
                request.verb,
                text,
                objects=(request.path,),
                extra=(("non_resource_url", (request.path,)),),
            ),
        )
    what = request.qualified_resource
    if request.name:
        what += f"/{request.name}"
    container = request.container
    extra: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("api_group", (request.group or CORE,)),
        ("version", (request.version,)),
        ("resource", _resources(request)),
        ("subresource", (request.subresource,) if request.subresource else ()),
        ("namespace", _namespaces(request)),
        ("resource_name", (request.name,) if request.name else ()),
        ("container", (container,) if container is not None else ()),
    )
    # What the index finds the session by (gatehouse sessions --touched):
    # the object as kubectl names it, its resource, and its namespace.
    objects = [what]
    if request.name:
        objects.append(request.qualified_resource)
    if request.namespace and not (
        request.resource == "namespaces" and request.name == request.namespace
    ):
        objects.append(f"namespaces/{request.namespace}")
    return (Command(PROTOCOL, request.verb, text, objects=tuple(objects), extra=extra),)
