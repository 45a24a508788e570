"""Which URLs jobs may fetch or post to: an allow/deny policy against SSRF.

Production denies private, loopback, link-local, multicast and reserved
addresses by default, so a webhook cannot be pointed at the metadata service
or the broker's management port; development allows loopback so the examples
work. The web checks a URL when the job is submitted (422), and the worker
checks again right before connecting, with the addresses the name resolves
to then (a name may be re-pointed in between).
"""

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlNotAllowed(ValueError):
    """The URL's host is outside what this environment's policy permits."""


@dataclass(frozen=True)
class UrlPolicy:
    deny_private: bool = True
    allow: tuple[Network, ...] = field(default_factory=tuple)
    deny: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "UrlPolicy":
        return cls(
            deny_private=bool(settings.get("deny_private", True)),
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in settings.get("allow", [])),
            deny=tuple(ipaddress.ip_network(n, strict=False) for n in settings.get("deny", [])),
        )

    def check_address(self, address: Address) -> str | None:
        """Why this address is refused, or None when it is allowed."""
        if any(address in network for network in self.deny):
            return f"{address} is in a denied network"
        if any(address in network for network in self.allow):
            return None
        if self.deny_private and not address.is_global:
            return f"{address} is a private, loopback, link-local or reserved address"
        return None

    def check_url(self, url: str, resolve: bool = True) -> None:
        host = urlsplit(url).hostname
        if not host:
            raise UrlNotAllowed("the URL has no host")
        if not self.deny_private and not self.deny:
            return  # nothing to refuse: no need to resolve the name
        for address in self._addresses(host, resolve):
            reason = self.check_address(address)
            if reason:
                raise UrlNotAllowed(f"{host}: {reason}")

    @staticmethod
    def _addresses(host: str, resolve: bool) -> Iterable[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if not resolve:
            return []
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise UrlNotAllowed(f"{host} does not resolve: {exc}") from exc
        return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}


def policy_for(settings: Any) -> UrlPolicy:
    return UrlPolicy.from_settings(settings.taskplane_url_policy or {})
