"""Kafka ACLs: what a principal may do (asked of the broker), and granting ACLs (admin work).

:func:`check_permissions` runs before a command starts consuming or producing: it asks the broker
which operations the connected principal may perform on each topic (a Metadata request with
``include_topic_authorized_operations``, Kafka >= 2.3, evaluated by the cluster's own authorizer)
and on the consumer group (DescribeGroups with ``include_authorized_operations``), and raises a
:class:`KafkaAuthorizationError` naming every missing operation and resource. Without it a worker
lacking READ would join its group and retry fetches forever; with it nothing is consumed and no
offset is committed. A broker without an authorizer reports every operation as allowed.

:func:`create_acls` adds ACLs through the CreateAcls API (it needs ALTER on the cluster, i.e. an
admin principal); the test suite uses it on the secured local broker.

aiokafka has request classes for CreateAcls but none for Metadata v8; the two request/response
structures below follow the Kafka protocol's ``MetadataRequest.json`` / ``MetadataResponse.json``
(v8 is the last non-flexible version) and reuse aiokafka's protocol types and client.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from streamrec.errors import StreamrecError
from streamrec.streams.security import KafkaSecurity

log = logging.getLogger(__name__)


class KafkaAuthorizationError(StreamrecError):
    """The principal lacks an ACL the command needs."""


class Operation(enum.IntEnum):
    """Kafka's AclOperation codes."""

    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class ResourceType(enum.IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    LITERAL = 3
    PREFIXED = 4


TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_OR_PARTITION = 3
GROUP_AUTHORIZATION_FAILED = 30
ALLOW = 3  # AclPermissionType
RETRIES = 40
RETRY_BACKOFF_S = 0.25
_NOT_PROVIDED = -(2**31)  # Kafka's "authorized operations not computed" sentinel


@dataclass(frozen=True)
class Need:
    """``operation`` on a topic or a group, and why the command needs it (for the error message)."""

    resource: ResourceType
    name: str
    operation: Operation
    why: str

    def describe(self) -> str:
        return f"{self.operation.name} on {self.resource.name.lower()} {self.name!r} ({self.why})"


@dataclass(frozen=True)
class Acl:
    principal: str  # "User:name"
    resource: ResourceType
    name: str
    operation: Operation
    pattern: PatternType = PatternType.LITERAL
    host: str = "*"


# ---------------------------------------------------------------- Metadata v8 (authorized operations)
class _MetadataResponseV8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _AuthorizedOperationsRequest(Request[_MetadataRequestV8]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


def _operations(bits: int) -> set[Operation]:
    if bits == _NOT_PROVIDED:
        return set()
    return {op for op in Operation if bits & (1 << op)}


async def _admin(bootstrap: str, security: KafkaSecurity) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
    await admin.start()
    return admin


async def topic_operations(bootstrap: str, security: KafkaSecurity, topics: Sequence[str]) -> dict[str, set[Operation]]:
    """``{topic: operations the principal may perform}``; a topic it may not even DESCRIBE maps to an empty
    set, a topic that does not exist is left out, and so is one whose answer stays unknown (a transient
    error such as LEADER_NOT_AVAILABLE for ~10 s: better unchecked than wrongly refused)."""
    admin = await _admin(bootstrap, security)
    out: dict[str, set[Operation]] = {}
    try:
        pending = list(topics)
        for _attempt in range(RETRIES):
            response = await admin._send_request(_AuthorizedOperationsRequest(pending))  # aiokafka: no public call
            unknown = []
            for error_code, name, _internal, _partitions, bits in response.topics:
                if error_code == TOPIC_AUTHORIZATION_FAILED:
                    out[name] = set()
                elif error_code == UNKNOWN_TOPIC_OR_PARTITION:
                    continue
                elif bits == _NOT_PROVIDED:
                    unknown.append(name)
                else:
                    out[name] = _operations(bits)
            if not unknown:
                break
            pending = unknown
            await asyncio.sleep(RETRY_BACKOFF_S)
        else:
            log.warning("could not learn the ACLs on %s from the broker: not checked", pending)
    finally:
        await admin.close()
    return out


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]
    # aiokafka's own v3 struct names the v2 response type, which drops authorized_operations
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _GroupOperationsRequest(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, group: str) -> None:
        self._group = group

    def build(self, request_struct_class: type[_DescribeGroupsRequestV3]) -> _DescribeGroupsRequestV3:
        return request_struct_class([self._group], True)


async def group_operations(bootstrap: str, security: KafkaSecurity, group: str) -> set[Operation]:
    """Operations the principal may perform on a consumer group (empty: not even DESCRIBE). Transient
    coordinator errors (loading, moving, not yet created) are retried for ~10 s, then raised."""
    from aiokafka.errors import CoordinatorNotAvailableError, GroupAuthorizationFailedError, for_code

    admin = await _admin(bootstrap, security)
    try:
        for attempt in range(RETRIES):
            try:
                node_id = await admin.find_coordinator(group)
                response = await admin._send_request(_GroupOperationsRequest(group), node_id)  # no public call
            except CoordinatorNotAvailableError:  # a fresh cluster creates __consumer_offsets on the first lookup
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            for error_code, group_id, *_rest, bits in response.groups:
                if group_id != group:
                    continue
                if error_code == GROUP_AUTHORIZATION_FAILED:
                    return set()
                if error_code == 0 and bits != _NOT_PROVIDED:
                    return _operations(bits)
                if attempt == RETRIES - 1:
                    raise for_code(error_code)(f"describing consumer group {group!r}")
            await asyncio.sleep(RETRY_BACKOFF_S)
    except GroupAuthorizationFailedError:
        return set()
    finally:
        await admin.close()
    return set()


def _implied(ops: set[Operation]) -> set[Operation]:
    """Kafka's implications: ALL implies everything; READ/WRITE/DELETE/ALTER imply DESCRIBE."""
    if Operation.ALL in ops:
        return set(Operation)
    out = set(ops)
    if out & {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}:
        out.add(Operation.DESCRIBE)
    return out


async def check_permissions(bootstrap: str, security: KafkaSecurity, needs: Iterable[Need]) -> None:
    """Raise :class:`KafkaAuthorizationError` listing every need the principal lacks (topics that do not
    exist are not checked: creating them is the caller's business)."""
    needs = list(needs)
    topics = sorted({n.name for n in needs if n.resource is ResourceType.TOPIC})
    topic_ops = await topic_operations(bootstrap, security, topics) if topics else {}
    group_ops: dict[str, set[Operation]] = {}
    for group in sorted({n.name for n in needs if n.resource is ResourceType.GROUP}):
        group_ops[group] = await group_operations(bootstrap, security, group)
    missing = []
    for need in needs:
        if need.resource is ResourceType.TOPIC:
            if need.name not in topic_ops:
                continue
            have = _implied(topic_ops[need.name])
        else:
            have = _implied(group_ops.get(need.name, set()))
        if need.operation not in have:
            missing.append(need)
    if missing:
        who = f"user {security.username!r}" if security.uses_sasl else f"this client ({security.protocol})"
        raise KafkaAuthorizationError(
            f"Kafka authorisation: {who} is not allowed "
            + "; ".join(n.describe() for n in missing)
            + ". Nothing was consumed or produced. Ask the cluster's admin for these ACLs "
            "(README: 'Production Kafka')"
        )


async def create_acls(bootstrap: str, security: KafkaSecurity, acls: Iterable[Acl], *, wait_s: float = 15.0) -> None:
    """Add ALLOW ACLs (needs an admin principal: ALTER on the cluster), then wait until the broker's
    authorizer lists them (ACLs are applied from the metadata log asynchronously)."""
    from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

    acls = list(acls)
    admin = await _admin(bootstrap, security)
    try:
        for acl in acls:
            response = await admin._send_request(  # aiokafka: no public call
                CreateAclsRequest(acl.resource, acl.name, acl.pattern, acl.principal, acl.host, acl.operation, ALLOW)
            )
            for error_code, error_message in response.creation_responses:
                if error_code:
                    raise KafkaAuthorizationError(f"creating the ACL {acl} failed: error {error_code} {error_message}")
        node_id = admin._client.get_random_node()
        deadline = asyncio.get_running_loop().time() + wait_s
        pending = list(acls)
        while pending:
            acl = pending[0]
            response = await admin._send_request(
                DescribeAclsRequest(acl.resource, acl.name, acl.pattern, acl.principal, acl.host, acl.operation, ALLOW),
                node_id,
            )
            if response.error_code == 0 and response.resources:
                pending.pop(0)
            elif asyncio.get_running_loop().time() > deadline:
                raise KafkaAuthorizationError(f"the ACL {acl} was created but is not visible after {wait_s:.0f} s")
            else:
                await asyncio.sleep(0.05)
    finally:
        await admin.close()
