"""The network prefix kept of an IP address: the standard library's reading of the address, whichever path
(vectorised or one value at a time) cuts it."""

from __future__ import annotations

import ipaddress

import polars as pl

from lake.privacy import truncate_ip

ADDRESSES = [
    "203.0.113.77",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.9",
    " 198.51.100.7 ",  # padded: read once stripped
    "198.51.100.7\n",
    "203.0.113.077",  # a leading zero: not an address for ipaddress
    "01.2.3.4",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4/24",
    "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits
    "2001:db8:1234:5678::1",
    "::ffff:203.0.113.77",
    "fe80::1%eth0",
    "not an address",
    "",
    None,
]


def expected(address: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of ``address`` by :mod:`ipaddress`, None if it is no address."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def test_the_prefix_is_the_standard_librarys_network_of_the_address() -> None:
    kept = truncate_ip(pl.Series(ADDRESSES, dtype=pl.String)).to_list()
    assert kept == [expected(a) for a in ADDRESSES]
    assert kept[:4] == ["203.0.113.0", "0.0.0.0", "255.255.255.0", "10.0.0.0"]
    assert kept[6:13] == [None] * 7
    assert kept[13] == "2001:db8:1234::"
