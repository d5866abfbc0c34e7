"""How every streamrec process connects to Kafka: TLS, SASL, and a fail-fast connection check.

One settings block, :class:`KafkaSecuritySettings`, is shared by every command that talks to Kafka
(``worker``, ``replay``, ``tail`` inherit it; ``bench`` and ``demo`` add it beside their own
settings): ``STREAMREC_KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
``STREAMREC_KAFKA_CA_FILE``, ``STREAMREC_KAFKA_CERT_FILE`` / ``STREAMREC_KAFKA_KEY_FILE`` (mutual
TLS), ``STREAMREC_KAFKA_SASL_MECHANISM`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
``STREAMREC_KAFKA_USERNAME`` and the password (``STREAMREC_KAFKA_PASSWORD`` or, better,
``STREAMREC_KAFKA_PASSWORD_FILE``), each also a ``--kafka-*`` flag.

They are resolved once into a :class:`KafkaSecurity`, which hands the same settings to aiokafka
(``security_protocol``, ``ssl_context`` from :func:`aiokafka.helpers.create_ssl_context`,
``sasl_*``) and to Faust (``broker_credentials`` = :class:`faust.SASLCredentials` or
:class:`faust.SSLCredentials`, which Faust's aiokafka driver turns into the same keywords).
Nothing is hand-rolled: TLS is Python's ``ssl``, SASL/SCRAM is aiokafka's.

The password is a :class:`pydantic.SecretStr`: its ``repr``/``str`` is ``**********``; it is
handed to aiokafka only when a client is built, and never logged.

aiokafka's own bootstrap logs the cause of a failed connection and raises a generic "Unable to
bootstrap"; :func:`check_connection` connects once with the same settings before anything else
starts and turns the cause into a :class:`KafkaConnectError` that says what was wrong (untrusted
certificate, not a TLS listener, TLS client on a plaintext listener, wrong username or password,
mechanism not enabled, nothing listening, no answer) and what to set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.errors import ConfigError, StreamrecError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaConnectError(StreamrecError):
    """The brokers could not be reached or refused this client (TLS, authentication)."""


class KafkaSecuritySettings(BaseSettings):
    """The Kafka connection's security settings (env ``STREAMREC_KAFKA_*``, flags ``--kafka-*``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_ca_file: Path | None = Field(
        None, description="TLS: PEM file of the CA(s) that signed the brokers' certificates (default: the system's)"
    )
    kafka_cert_file: Path | None = Field(None, description="mutual TLS: this client's certificate (PEM)")
    kafka_key_file: Path | None = Field(None, description="mutual TLS: the private key of the client certificate (PEM)")
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_username: str | None = Field(None, description="SASL user name")
    kafka_password: SecretStr | None = Field(
        None, description="SASL password (never shown; prefer the password file: a flag is visible in `ps`)"
    )
    kafka_password_file: Path | None = Field(
        None, description="file holding the SASL password (one line; e.g. a mounted secret)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        protocol = self.kafka_security_protocol
        tls_given = [n for n in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file") if getattr(self, n)]
        if tls_given and protocol not in TLS_PROTOCOLS:
            raise ValueError(
                f"{', '.join(tls_given)} set but kafka_security_protocol is {protocol}: TLS is off; use SSL or SASL_SSL"
            )
        if self.kafka_key_file and not self.kafka_cert_file:
            raise ValueError("kafka_key_file set without kafka_cert_file (mutual TLS needs the certificate too)")
        sasl_given = self.kafka_username or self.kafka_password or self.kafka_password_file
        if protocol in SASL_PROTOCOLS:
            if not self.kafka_username:
                raise ValueError(f"kafka_security_protocol {protocol} needs kafka_username")
            if self.kafka_password is None and self.kafka_password_file is None:
                raise ValueError(f"kafka_security_protocol {protocol} needs kafka_password_file (or kafka_password)")
        elif sasl_given:
            raise ValueError(
                f"SASL user/password set but kafka_security_protocol is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
            )
        if self.kafka_password is not None and self.kafka_password_file is not None:
            raise ValueError("give kafka_password or kafka_password_file, not both")
        return self

    def kafka_security(self) -> KafkaSecurity:
        """Resolve the settings (reads the password file); raises :class:`ConfigError` naming the file."""
        password = self.kafka_password
        if self.kafka_password_file is not None:
            try:
                text = self.kafka_password_file.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the Kafka password file {self.kafka_password_file} "
                    f"(STREAMREC_KAFKA_PASSWORD_FILE): {exc.strerror}"
                ) from None
            password = SecretStr(text.rstrip("\r\n"))
        if password is not None:
            redact_in_logs(password.get_secret_value())
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
            mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_username,
            password=password,
        )


@dataclass(frozen=True)
class KafkaSecurity:
    """Resolved connection security; builds the keywords for aiokafka and the credentials for Faust."""

    protocol: SecurityProtocol = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    mechanism: SaslMechanism = "PLAIN"
    username: str | None = None
    password: SecretStr | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    def describe(self) -> str:
        """One line for logs and error messages (never the password)."""
        parts: list[str] = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.mechanism} as {self.username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_file}" if self.ca_file else "system CAs")
            if self.cert_file:
                parts.append(f"client certificate {self.cert_file}")
        return ", ".join(parts)

    def ssl_context(self) -> ssl.SSLContext | None:
        """aiokafka's TLS context (hostname checked, certificate verified), or None without TLS."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        for label, path in (("CA file", self.ca_file), ("certificate", self.cert_file), ("key", self.key_file)):
            if path is not None and not path.is_file():
                raise ConfigError(f"Kafka TLS {label} {path} does not exist")
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ca_file, certfile=self.cert_file, keyfile=self.key_file
            )
            return context
        except ssl.SSLError as exc:
            raise ConfigError(
                f"cannot load the Kafka TLS files (CA {self.ca_file}, certificate {self.cert_file}, "
                f"key {self.key_file}): {exc.reason or exc}; they must be PEM"
            ) from None

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keywords for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.uses_sasl:
            kwargs.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value() if self.password else None,
            )
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        context = self.ssl_context()
        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value() if self.password else None,
                ssl_context=context,
                mechanism=self.mechanism,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None


PLAINTEXT = KafkaSecurity()


# ---------------------------------------------------------------- log redaction (a safety net)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_installed = False


def redact_in_logs(secret: str) -> None:
    """Register a secret that :func:`install_log_redaction` removes from every log message.

    Why: at DEBUG, aiokafka logs every request it sends, and a SASL/PLAIN authentication request
    carries the password in clear (``sasl_auth_bytes=b'\\x00user\\x00password'``). streamrec never
    logs the password itself; this keeps libraries from doing it either.
    """
    if len(secret) >= 4:  # shorter "secrets" would redact ordinary text
        with _secrets_lock:
            _secrets.add(secret)


def install_log_redaction() -> None:
    """Entry points: redact registered secrets in every log record when it is created (so whatever
    handlers Faust/mode install later, none sees them). Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if _secrets:
            message = record.getMessage()
            redacted = message
            for secret in tuple(_secrets):
                redacted = redacted.replace(secret, "***")
            if redacted != message:
                record.msg, record.args = redacted, None
        return record

    logging.setLogRecordFactory(factory)


def split_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for entry in bootstrap.split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bootstrap server {entry!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ConfigError("no Kafka bootstrap servers given (STREAMREC_BOOTSTRAP)")
    return hosts


async def check_connection(bootstrap: str, security: KafkaSecurity, *, timeout_s: float = 10.0) -> None:
    """Connect to the first bootstrap server that works, authenticate and ask for metadata.

    Raises :class:`KafkaConnectError` naming what was wrong when none works (each within
    ``timeout_s``), so that a command fails in seconds with a clear message instead of retrying.
    """
    problems = []
    for host, port in split_bootstrap(bootstrap):
        problem = await _try(host, port, security, timeout_s)
        if problem is None:
            return
        problems.append(problem)
    raise KafkaConnectError("; ".join(problems) + f" [connection: {security.describe()}]")


async def _try(host: str, port: int, security: KafkaSecurity, timeout_s: float) -> str | None:
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    where = f"{host}:{port}"
    kwargs = security.aiokafka_kwargs()
    conn = None
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs)
            await conn.send(MetadataRequest([]))
        return None
    except TimeoutError:
        return f"no answer from the broker at {where} within {timeout_s:.0f} s"
    except ssl.SSLCertVerificationError as exc:
        ca = f"the CA file {security.ca_file}" if security.ca_file else "the system's CAs (no STREAMREC_KAFKA_CA_FILE)"
        return (
            f"TLS: the certificate of the broker at {where} is not trusted by {ca}: {exc.verify_message}; "
            "set STREAMREC_KAFKA_CA_FILE to the CA that signed the brokers' certificates"
        )
    except ssl.SSLError as exc:
        return (
            f"TLS handshake with {where} failed ({exc.reason or exc}): is {where} a TLS listener? "
            f"(security protocol {security.protocol})"
        )
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        return (
            f"SASL authentication of user {security.username!r} ({security.mechanism}) failed at {where}: "
            f"{_broker_message(exc)}; check STREAMREC_KAFKA_USERNAME and the password"
        )
    except errors.UnsupportedSaslMechanismError as exc:
        return (
            f"SASL mechanism {security.mechanism} is not enabled on the listener at {where} "
            f"({type(exc).__name__}); set STREAMREC_KAFKA_SASL_MECHANISM to one the cluster enables"
        )
    except ConnectionRefusedError:
        return f"nothing listens at {where} (connection refused)"
    except (OSError, errors.KafkaError) as exc:
        if not security.uses_tls and await _speaks_tls(host, port, timeout_s):
            return (
                f"the listener at {where} speaks TLS but this client's security protocol is {security.protocol}: "
                "set STREAMREC_KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL (and STREAMREC_KAFKA_CA_FILE)"
            )
        if security.uses_tls and not await _speaks_tls(host, port, timeout_s):
            return (
                f"the listener at {where} does not speak TLS (the handshake was cut off) but this client's "
                f"security protocol is {security.protocol}: is it a PLAINTEXT or SASL_PLAINTEXT listener?"
            )
        hint = ""
        if security.uses_tls and security.cert_file is None:
            hint = "; if it requires a client certificate (mutual TLS) set STREAMREC_KAFKA_CERT_FILE and _KEY_FILE"
        return (
            f"the broker at {where} closed the connection ({type(exc).__name__}); check its listener's "
            f"security protocol (this client: {security.protocol}){hint}"
        )
    finally:
        if conn is not None:
            conn.close()


def _broker_message(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


async def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """True when a TLS handshake (certificate not checked) completes with host:port."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(min(timeout_s, 5.0)):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
