"""The OS trust store and the proxy (agent/cloud/netconfig.py): a TLS-intercepting proxy whose root is in the
OS store (here OpenSSL's `SSL_CERT_FILE`) but not in certifi, reached through an authenticated proxy."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import sys
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.cloud import netconfig
from agent.cloud.transport import HttpTransport
from agent.core.clock import SystemClock
from agent.errors import Offline

HOST = "license.pospal.test"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(tmp_path):
    """An "antivirus" root CA and the certificate it forges for HOST. Returns (ca.pem, leaf.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Scanner Root"))
        .issuer_name(_name("Scanner Root"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class InterceptingProxy:
    """An HTTP proxy that answers CONNECT, then terminates TLS itself with a forged certificate (as
    antivirus HTTPS scanning does) and answers `GET /v1/keys`. Records the CONNECT lines it saw."""

    def __init__(self, leaf, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(leaf, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.connects: list[str] = []
        self.served = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        for _ in range(20):  # bounded: a test makes a handful of connections
            if self.stop.is_set():
                return
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self._handle(conn)
                except (OSError, ssl.SSLError):
                    pass

    @staticmethod
    def _read_head(f) -> list[str]:
        lines = []
        while True:
            line = f.readline(65536).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                return lines
            lines.append(line.strip())

    def _handle(self, conn):
        head = self._read_head(conn.makefile("rb"))
        if not head or not head[0].startswith("CONNECT "):
            return
        self.connects.append("\n".join(head))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            request = self._read_head(tls.makefile("rb"))
            body = json.dumps({"keys": [], "seen": request[0] if request else ""}).encode()
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.served += 1

    def close(self):
        self.stop.set()
        try:  # wake the accept() so the thread sees stop at once
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def intercepted(tmp_path, monkeypatch):
    ca, leaf, key = make_pki(tmp_path)
    proxy = InterceptingProxy(leaf, key)
    for var in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://till:s3cret@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the "OS store": OpenSSL's default file
    yield proxy
    proxy.close()


def test_the_agent_trusts_a_root_only_the_os_store_holds_through_an_authenticated_proxy(intercepted):
    transport = HttpTransport(f"https://{HOST}", SystemClock())
    try:
        assert transport.keys()["keys"] == []
    finally:
        transport.close()
    assert intercepted.served == 1
    connect = intercepted.connects[0]
    assert connect.startswith(f"CONNECT {HOST}:443 ")
    auth = [
        line.split(":", 1)[1].strip()
        for line in connect.splitlines()
        if line.lower().startswith("proxy-authorization:")
    ]
    assert auth == ["Basic dGlsbDpzM2NyZXQ="]  # till:s3cret


def test_certifi_alone_would_have_read_offline(intercepted):
    plain = requests.Session()
    try:
        with pytest.raises(requests.exceptions.SSLError):
            plain.get(f"https://{HOST}/v1/keys", timeout=10)
    finally:
        plain.close()


def test_a_forged_root_the_os_store_does_not_trust_is_still_refused(intercepted, monkeypatch, tmp_path):
    (tmp_path / "other").mkdir()
    other_ca, _leaf, _key = make_pki(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    transport = HttpTransport(f"https://{HOST}", SystemClock())
    try:
        with pytest.raises(Offline):
            transport.keys()
    finally:
        transport.close()
    assert intercepted.served == 0


def test_diagnostics_name_the_proxy_without_its_password_and_the_trust_store(intercepted):
    transport = HttpTransport(f"https://{HOST}", SystemClock())
    shown = transport.describe_network()
    assert shown["proxy"] == f"http://till:***@127.0.0.1:{intercepted.port} (from environment)"
    assert "s3cret" not in json.dumps(shown)
    assert shown["trust_store"] == "OpenSSL default paths (truststore)"


def test_no_proxy_is_direct(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert netconfig.describe(f"https://{HOST}")["proxy"] == "none (direct)"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://proxy:8080", "http://proxy:8080"),
        ("http://u:p@proxy:8080", "http://u:***@proxy:8080"),
        ("proxy.corp:3128", "http://proxy.corp:3128"),
    ],
)
def test_mask_hides_only_the_password(url, shown):
    assert netconfig.mask(url) == shown


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="the Windows registry")
def test_the_windows_system_proxy_comes_from_internet_settings(monkeypatch):
    import winreg

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    path = r"Software\Microsoft\Windows\CurrentVersion\Internet Settings"
    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, path) as key:
        saved = {}
        for name in ("ProxyEnable", "ProxyServer"):
            try:
                saved[name] = winreg.QueryValueEx(key, name)
            except OSError:
                saved[name] = None
        try:
            winreg.SetValueEx(key, "ProxyEnable", 0, winreg.REG_DWORD, 1)
            winreg.SetValueEx(key, "ProxyServer", 0, winreg.REG_SZ, "127.0.0.1:3128")
            assert netconfig.proxy_for(f"https://{HOST}") == (
                "http://127.0.0.1:3128",
                "registry (Internet Settings)",
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    try:
                        winreg.DeleteValue(key, name)
                    except OSError:
                        pass
                else:
                    winreg.SetValueEx(key, name, 0, value[1], value[0])
