"""The C{kubernetes} protocol adapter: kubectl and client-go in, API servers out."""

from __future__ import annotations

from zope.interface import implementer

from gatehouse.policy.attributes import PolicyAttributes
from gatehouse.protocols import IProtocolAdapter
from gatehouse.protocols.http.adapter import HTTPAdapterBase
from gatehouse.protocols.http.flavour import IHTTPFlavour

__all__ = ["KubernetesAdapter", "adapter"]


@implementer(IProtocolAdapter)
class KubernetesAdapter(HTTPAdapterBase):
    """
    The HTTP listener with Kubernetes semantics: requests read as the API
    server reads them, impersonation upstream, Status answers.
    """

    name = "kubernetes"
    kubernetes = True

    @property
    def policy_attributes(self) -> PolicyAttributes:
        """Verb, group, resource, subresource, namespace, name."""
        from gatehouse.protocols.kubernetes.attributes import POLICY_ATTRIBUTES

        return POLICY_ATTRIBUTES

    def flavour(self) -> IHTTPFlavour:
        """Kubernetes."""
        from gatehouse.protocols.kubernetes.flavour import KubernetesFlavour

        return KubernetesFlavour()


adapter = KubernetesAdapter()
