"""The secured local broker: what ``streamrec kafka up --secure`` adds to the plain one.

Listeners (all bound to the configured loopback address):

* ``SASL_SSL`` on ``port``: TLS with a throw-away CA (:mod:`streamrec.localkafka.tls`), then SASL
  SCRAM-SHA-256 or SCRAM-SHA-512 (or PLAIN, same users and passwords, from a static JAAS list). The
  SCRAM credentials are written into the metadata log when the storage is formatted
  (``kafka-storage format --add-scram``): the super-user ``admin``, the user ``streamrec``, and any
  extra users of the config.
* ``SSL`` on ``port + 2``: mutual TLS; a client certificate signed by the CA is required and its
  CN is the principal (``User:streamrec-client`` for the generated client certificate).
* ``CONTROLLER`` on ``port + 1``: the KRaft controller, SASL/PLAIN with a static ``controller``
  principal (SCRAM cannot authenticate controllers: its credentials live in the metadata log).

Authorisation: ``StandardAuthorizer`` (KRaft's ACL store), ``allow.everyone.if.no.acl.found=false``,
super-users ``admin`` and ``controller``. Everyone else needs ACLs.

Passwords are generated once per broker home and kept in ``<home>/secrets/<user>.password``
(mode 0600); the TLS files in ``<home>/tls``. Nothing here is meant for a shared machine's
network: the broker binds to loopback.
"""

from __future__ import annotations

import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from streamrec.localkafka.tls import CLIENT_CN, TlsFiles, ensure_tls_files

ADMIN_USER = "admin"
APP_USER = "streamrec"
CONTROLLER_USER = "controller"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class SecureLayout:
    """Files of a secured broker under its home."""

    home: Path

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.home / "tls")

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def password(self, user: str) -> str:
        """The user's password, generated on first use (32 url-safe characters)."""
        path = self.password_file(user)
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.secrets_dir, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    @property
    def admin_properties(self) -> Path:
        """A client config for Kafka's own command-line tools (``--command-config``), as the super-user."""
        return self.home / "admin.properties"


def ensure_material(home: Path, host: str) -> SecureLayout:
    layout = SecureLayout(home)
    ensure_tls_files(layout.tls.directory, host)
    for user in (ADMIN_USER, APP_USER, CONTROLLER_USER):
        layout.password(user)
    _write_admin_properties(layout)
    return layout


def _jaas(module: str, user: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{user}" password="{password}"{extra};'


SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def listener_properties(
    layout: SecureLayout,
    host: str,
    port: int,
    controller_port: int,
    mtls_port: int,
    users: tuple[tuple[str, str], ...] = (),
) -> list[str]:
    admin = layout.password(ADMIN_USER)
    controller = layout.password(CONTROLLER_USER)
    plain_users = "".join(f' user_{u}="{pw}"' for u, pw in _credentials(layout, users))
    lines = [
        f"listeners=SASL_SSL://{host}:{port},SSL://{host}:{mtls_port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=SASL_SSL://{host}:{port},SSL://{host}:{mtls_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        # clients: SCRAM over TLS; the broker talks to itself as the super-user
        "sasl.enabled.mechanisms=" + ",".join((*SCRAM_MECHANISMS, "PLAIN")),
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        *(
            f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config={_jaas(SCRAM_MODULE, ADMIN_USER, admin)}"
            for m in SCRAM_MECHANISMS
        ),
        # PLAIN (over TLS) with the same users, from a static list: for clients that cannot do SCRAM
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={_jaas(PLAIN_MODULE, ADMIN_USER, admin, plain_users)}",
        # controller: static PLAIN principal (SCRAM credentials are not readable before the metadata log is)
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config="
        + _jaas(PLAIN_MODULE, CONTROLLER_USER, controller, f' user_{CONTROLLER_USER}="{controller}"'),
        # TLS: PEM key + chain, the throw-away CA as trust store; mutual TLS on the SSL listener
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={layout.tls.broker_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={layout.tls.ca_cert}",
        "listener.name.ssl.ssl.client.auth=required",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
        # ACLs
        f"authorizer.class.name={AUTHORIZER}",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{ADMIN_USER};User:{CONTROLLER_USER}",
    ]
    return lines


def _credentials(layout: SecureLayout, users: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    creds = [(ADMIN_USER, layout.password(ADMIN_USER)), (APP_USER, layout.password(APP_USER)), *users]
    for user, password in creds:
        if not user or any(c in user + password for c in ',=[]"\\ \n'):
            raise ValueError(f'user {user!r}: names and passwords must not contain , = [ ] " \\ spaces or newlines')
    return creds


def format_arguments(layout: SecureLayout, users: tuple[tuple[str, str], ...]) -> list[str]:
    """``kafka-storage format`` arguments creating the SCRAM credentials (both mechanisms for every user)."""
    args: list[str] = []
    for user, password in _credentials(layout, users):
        for mechanism in SCRAM_MECHANISMS:
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args


def probe_context(layout: SecureLayout) -> ssl.SSLContext:
    """A TLS context for the liveness probe: verifies against the CA when it exists."""
    if layout.tls.ca_cert.exists():
        return ssl.create_default_context(cafile=str(layout.tls.ca_cert))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _write_admin_properties(layout: SecureLayout) -> None:
    text = "\n".join(
        [
            "# Written by streamrec: the super-user's client config for Kafka's command-line tools.",
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.jaas.config=" + _jaas(SCRAM_MODULE, ADMIN_USER, layout.password(ADMIN_USER)),
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={layout.tls.ca_cert}",
            "",
        ]
    )
    fd = os.open(layout.admin_properties, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def client_environment(layout: SecureLayout, bootstrap: str, user: str = APP_USER) -> dict[str, str]:
    """The ``STREAMREC_*`` settings a streamrec command needs to reach this broker as ``user``."""
    return {
        "STREAMREC_BOOTSTRAP": bootstrap,
        "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMREC_KAFKA_CA_FILE": str(layout.tls.ca_cert),
        "STREAMREC_KAFKA_USERNAME": user,
        "STREAMREC_KAFKA_PASSWORD_FILE": str(layout.password_file(user)),
    }


__all__ = [
    "ADMIN_USER",
    "APP_USER",
    "CLIENT_CN",
    "SCRAM_MECHANISMS",
    "SecureLayout",
    "client_environment",
    "ensure_material",
    "format_arguments",
    "listener_properties",
    "probe_context",
]
