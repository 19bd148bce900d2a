"""The gateway's configuration and log as text (no Docker; the real squid runs them in
test_egress.py): host patterns as squid domains, the access rules in force, squid's log lines as
egress.jsonl records, and the routed bridge's fence (INPUT only)."""

from __future__ import annotations

from labctl.engine.fence import link_local_specs, rule_specs
from labctl.run.egress import egress_records, proxy_env, squid_conf, squid_domains


def test_host_patterns_become_squid_domains() -> None:
    assert squid_domains(["pypi.org", "*.example.com", "www.example.com", "example.com", "pypi.org"]) == [
        "pypi.org", ".example.com"]


def test_the_configuration_allows_listed_hosts_from_the_run_only() -> None:
    conf = squid_conf(["pypi.org", "*.npmjs.org"], ["172.30.0.0/16"]).splitlines()
    assert "acl lc_clients src 172.30.0.0/16" in conf
    assert "acl lc_allowed dstdomain -n pypi.org .npmjs.org" in conf
    access = [line for line in conf if line.startswith("http_access")]
    assert access == ["http_access deny !lc_clients", "http_access deny manager",
                      "http_access deny !lc_http_ports", "http_access deny lc_connect !lc_tls_ports",
                      "http_access deny !lc_allowed", "http_access deny lc_loopback",
                      "http_access deny lc_linklocal", "http_access allow all"]
    assert "cache deny all" in conf and "access_log stdio:/egress/access.log labctl" in conf
    # An empty list allows no host at all (a name that never resolves), not every host.
    assert "acl lc_allowed dstdomain -n egress.invalid" in squid_conf([], ["10.0.0.0/24"]).splitlines()


def test_squid_log_lines_become_records() -> None:
    log = ("1781784001.250 CONNECT pypi.org 443 200 5120 700 TCP_TUNNEL pypi.org:443\n"
           "1781784002.000 GET not-allowed.example 80 403 3900 120 TCP_DENIED "
           "http://not-allowed.example/a b\n"
           "1781784003.5 NONE - - 400 0 0 NONE_NONE error:invalid-request\n"
           "garbage\n")
    a, d, bad = egress_records(log)
    assert (a.method, a.host, a.port, a.status, a.bytes, a.request_bytes, a.allowed) == (
        "CONNECT", "pypi.org", 443, 200, 5120, 700, True)
    assert a.time.isoformat() == "2026-06-18T12:00:01.250000+00:00"
    assert (d.host, d.allowed, d.status, d.url) == ("not-allowed.example", False, 403,
                                                   "http://not-allowed.example/a b")
    assert (bad.host, bad.port) == ("", None)


def test_the_proxy_variables_keep_the_meter_direct() -> None:
    env = proxy_env()
    assert env["http_proxy"] == env["HTTPS_PROXY"] == "http://egress-gateway:3128"
    assert env["no_proxy"].split(",")[0] == "meter" and env["NO_PROXY"] == env["no_proxy"]


def test_a_routed_bridge_is_fenced_from_the_host_and_link_local_addresses() -> None:
    routed = rule_specs("br-0123456789ab", "labctl:r:run-1", routed=True)
    assert [r[0] for r in routed] == ["INPUT"]
    link = link_local_specs("br-0123456789ab", "labctl:r:run-1")
    assert link["ipt"][:5] == ["FORWARD", "-i", "br-0123456789ab", "-d", "169.254.0.0/16"]
    assert link["ip6t"][:5] == ["FORWARD", "-i", "br-0123456789ab", "-d", "fe80::/10"]
    assert all(spec[-2:] == ["-j", "DROP"] and "labctl:r:run-1" in spec for spec in link.values())
    assert [r[0] for r in rule_specs("br-0123456789ab", "labctl:r:run-1")] == ["INPUT", "FORWARD"]
