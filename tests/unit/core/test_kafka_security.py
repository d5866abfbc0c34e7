"""The Kafka security settings block: validation, what aiokafka and Faust receive, secrets never shown."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from cryptography import x509
from pydantic import SecretStr

from streamrec.cli import main
from streamrec.commands.replay import ReplaySettings
from streamrec.commands.tail import TailSettings
from streamrec.config import settings_from_args
from streamrec.errors import ConfigError
from streamrec.localkafka import LocalKafka, LocalKafkaConfig
from streamrec.localkafka.secure import SecureLayout, format_arguments
from streamrec.localkafka.tls import ensure_tls_files
from streamrec.streams.security import KafkaSecurity, KafkaSecuritySettings, split_bootstrap
from streamrec.streams.settings import WorkerSettings

SECRET = "s3cret-Value-Never-Shown"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tls_files(tmp_path_factory.mktemp("tls"), "127.0.0.1").directory


def test_every_kafka_command_shares_the_block() -> None:
    for cls in (WorkerSettings, ReplaySettings, TailSettings):
        assert issubclass(cls, KafkaSecuritySettings)
        assert set(KafkaSecuritySettings.model_fields) <= set(cls.model_fields)


def test_plaintext_is_the_default_and_gives_aiokafka_nothing_else() -> None:
    security = KafkaSecuritySettings().kafka_security()
    assert security.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None


def test_environment_and_password_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    monkeypatch.setenv("STREAMREC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STREAMREC_KAFKA_USERNAME", "alice")
    monkeypatch.setenv("STREAMREC_KAFKA_PASSWORD_FILE", str(pw))
    monkeypatch.setenv("STREAMREC_KAFKA_CA_FILE", str(tls / "ca.pem"))
    settings = WorkerSettings()
    security = settings.kafka_security()
    assert security.password is not None and security.password.get_secret_value() == SECRET  # newline stripped
    kwargs = security.aiokafka_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "alice" and kwargs["sasl_plain_password"] == SECRET
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    for text in (repr(settings), str(settings), repr(security), security.describe()):
        assert SECRET not in text


def test_faust_gets_its_own_credential_types(tls: Path) -> None:
    sasl = KafkaSecurity(
        "SASL_SSL", ca_file=tls / "ca.pem", mechanism="SCRAM-SHA-512", username="u", password=SecretStr(SECRET)
    )
    creds = sasl.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert SECRET not in repr(creds)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == SECRET
    plain_sasl = KafkaSecurity("SASL_PLAINTEXT", mechanism="PLAIN", username="u", password=SecretStr(SECRET))
    assert plain_sasl.faust_credentials().protocol.value == "SASL_PLAINTEXT"
    mtls = KafkaSecurity("SSL", ca_file=tls / "ca.pem", cert_file=tls / "client.pem", key_file=tls / "client.key")
    assert isinstance(mtls.faust_credentials(), faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(mtls.faust_credentials())["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_ca_file": "/x.pem"}, "TLS is off"),
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_username"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_username": "u"}, "needs kafka_password_file"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_username": "u",
                "kafka_password": SECRET,
                "kafka_password_file": "/p",
            },
            "not both",
        ),
        ({"kafka_username": "u", "kafka_password": SECRET}, "SASL user/password set but"),
        ({"kafka_security_protocol": "SSL", "kafka_key_file": "/k.pem"}, "without kafka_cert_file"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "GSSAPI",
                "kafka_username": "u",
                "kafka_password": SECRET,
            },
            "kafka_sasl_mechanism",
        ),
    ],
)
def test_inconsistent_settings_are_refused_without_echoing_values(fields: dict[str, str], message: str) -> None:
    import argparse

    with pytest.raises(ConfigError) as err:
        settings_from_args(WorkerSettings, argparse.Namespace(**fields))
    assert message in str(err.value)
    assert SECRET not in str(err.value)


def test_unreadable_password_file_and_missing_ca_are_named(tmp_path: Path) -> None:
    s = KafkaSecuritySettings(
        kafka_security_protocol="SASL_SSL", kafka_username="u", kafka_password_file=tmp_path / "missing"
    )
    with pytest.raises(ConfigError, match=r"cannot read the Kafka password file .*missing"):
        s.kafka_security()
    with pytest.raises(ConfigError, match=r"CA file .*nope\.pem does not exist"):
        KafkaSecurity("SSL", ca_file=tmp_path / "nope.pem").aiokafka_kwargs()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        KafkaSecurity("SSL", ca_file=bad).aiokafka_kwargs()


def test_help_shows_the_flags_but_never_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_PASSWORD", SECRET)
    for command in ("worker", "replay", "tail", "bench", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        for flag in (
            "--kafka-security-protocol",
            "--kafka-ca-file",
            "--kafka-cert-file",
            "--kafka-key-file",
            "--kafka-sasl-mechanism",
            "--kafka-username",
            "--kafka-password",
            "--kafka-password-file",
        ):
            assert flag in out, (command, flag)
        assert SECRET not in out
        assert "STREAMREC_KAFKA_PASSWORD; env: (set, not shown)" in " ".join(out.split())


def test_split_bootstrap() -> None:
    assert split_bootstrap("a:9092, b:9093") == [("a", 9092), ("b", 9093)]
    assert split_bootstrap("[::1]:9092") == [("::1", 9092)]
    with pytest.raises(ConfigError):
        split_bootstrap("nohost")


def test_throw_away_certificates(tls: Path) -> None:
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    broker = x509.load_pem_x509_certificate((tls / "broker.pem").read_bytes().split(b"-----END PRIVATE KEY-----")[1])
    assert broker.issuer == ca.subject
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
    for secret_file in ("ca.key", "broker.pem", "client.key"):
        assert (tls / secret_file).stat().st_mode & 0o077 == 0, secret_file
    # Python's ssl accepts them the way aiokafka will use them
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "client.pem"), str(tls / "client.key"))
    before = (tls / "ca.pem").read_bytes()
    ensure_tls_files(tls, "127.0.0.1")
    assert (tls / "ca.pem").read_bytes() == before  # kept, not regenerated


def test_secure_server_properties(tmp_path: Path) -> None:
    broker = LocalKafka(LocalKafkaConfig(host="127.0.0.1", port=19595, home=tmp_path, secure=True))
    from streamrec.localkafka.secure import ensure_material

    ensure_material(tmp_path, "127.0.0.1")
    props = broker._server_properties()
    assert "listeners=SASL_SSL://127.0.0.1:19595,SSL://127.0.0.1:19597,CONTROLLER://127.0.0.1:19596" in props
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "PLAINTEXT://" not in props.replace("SASL_PLAINTEXT", "")
    layout = SecureLayout(tmp_path)
    assert layout.password_file("admin").stat().st_mode & 0o077 == 0
    args = format_arguments(layout, (("bob", "pw-1"),))
    assert args.count("--add-scram") == 6  # admin, streamrec, bob x SHA-256, SHA-512
    assert "SCRAM-SHA-512=[name=bob,password=pw-1]" in args
    with pytest.raises(ValueError, match="must not contain"):
        format_arguments(layout, (("eve", "a,b"),))


def test_log_records_never_carry_a_registered_password(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from streamrec.streams.security import install_log_redaction, redact_in_logs

    install_log_redaction()
    KafkaSecuritySettings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_username="u", kafka_password=SecretStr(SECRET)
    ).kafka_security()  # registers it
    struct_repr = f"SaslAuthenticateRequest_v1(sasl_auth_bytes=b'\\x00u\\x00{SECRET}')"  # aiokafka, DEBUG
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "127.0.0.1", 9092, 7, struct_repr)
    assert caplog.records and SECRET not in caplog.text
    assert "sasl_auth_bytes=b'\\x00u\\x00***'" in caplog.text
    redact_in_logs("ab")  # too short to redact safely: ignored
    logging.getLogger("x").warning("a tab b")
    assert "a tab b" in caplog.text


def test_create_topic_errors_name_the_operation_and_topic() -> None:
    from types import SimpleNamespace

    from streamrec.streams.topics import TopicError, _raise_create_errors

    security = KafkaSecurity("SASL_SSL", mechanism="SCRAM-SHA-512", username="bob", password=SecretStr(SECRET))
    _raise_create_errors(SimpleNamespace(topic_errors=[("a", 0, None), ("b", 36, "exists")]), security)  # fine
    with pytest.raises(TopicError, match="user 'bob' is not allowed CREATE on topic 'c'"):
        _raise_create_errors(SimpleNamespace(topic_errors=[("c", 29, "denied")]), security)
    with pytest.raises(TopicError, match="creating topic 'd' failed: error 37"):
        _raise_create_errors(SimpleNamespace(topic_errors=[("d", 37, "bad partitions")]), security)


def test_the_worker_asks_for_exactly_the_documented_acls() -> None:
    from streamrec.commands.worker import permissions_needed
    from streamrec.streams.acls import Operation, ResourceType

    needs = {(n.resource, n.name, n.operation) for n in permissions_needed(WorkerSettings(app_id="app"))}
    t, g = ResourceType.TOPIC, ResourceType.GROUP
    assert needs == {
        (t, "events", Operation.READ),
        (t, "items", Operation.READ),
        (t, "recommendations", Operation.WRITE),
        (t, "dead-letter", Operation.WRITE),
        (g, "app", Operation.READ),
        (t, "app-sessions-changelog", Operation.READ),
        (t, "app-sessions-changelog", Operation.WRITE),
        (t, "app-__assignor-__leader", Operation.READ),
        (t, "app-__assignor-__leader", Operation.WRITE),
        (g, "app-covisit", Operation.READ),
        (t, "app-covisit-deltas", Operation.READ),
        (t, "app-covisit-deltas", Operation.WRITE),
        (t, "app-covisit-rows", Operation.READ),
        (t, "app-covisit-rows", Operation.WRITE),
    }


def test_operation_bits_and_implications() -> None:
    from streamrec.streams.acls import Operation, _implied, _operations

    assert _operations(-(2**31)) == set()
    assert _operations((1 << 3) | (1 << 8)) == {Operation.READ, Operation.DESCRIBE}
    assert Operation.DESCRIBE in _implied({Operation.WRITE})
    assert _implied({Operation.ALL}) == set(Operation)
    assert Operation.READ not in _implied({Operation.DESCRIBE})
