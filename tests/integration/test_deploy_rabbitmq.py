"""deploy/rabbitmq: the broker definitions load into a real RabbitMQ, and the services' own
declarations are accepted against them (same arguments, no PRECONDITION_FAILED)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pika
import pika.exceptions
import pytest

from skynet.common.topology import Topology, actions_queue
from tests.fixtures.broker import amqp_url_for
from tests.fixtures.common import require, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq"


def _make_definitions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_definitions", DEPLOY / "make_definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> dict[str, Any]:
    return json.loads((DEPLOY / "definitions.json").read_text())


def _sources(defs: dict[str, Any]) -> list[str]:
    prefix = actions_queue("")
    return [q["name"][len(prefix) :] for q in defs["queues"] if q["name"].startswith(prefix)]


def _import_into(vhost: str, defs: dict[str, Any]) -> None:
    """``rabbitmqctl import_definitions`` has no vhost option: point every entry at ``vhost``."""
    require(shutil.which("rabbitmqctl") is not None, "rabbitmqctl")
    moved = {key: [dict(item, vhost=vhost) for item in value] for key, value in defs.items() if key != "vhosts"}
    subprocess.run(
        ["rabbitmqctl", "-q", "import_definitions", "--format", "json"],
        input=json.dumps(moved).encode(),
        check=True,
        capture_output=True,
        timeout=120,
    )


def _declare(vhost: str, topology: Topology) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url_for(vhost)))
    try:
        topology.declare_all(connection.channel())
    finally:
        if connection.is_open:
            connection.close()


def test_the_committed_definitions_are_exactly_what_the_services_declare() -> None:
    committed = _committed()
    sources = _sources(committed)
    assert sources, "definitions.json declares no source"
    regenerated = _make_definitions().definitions(sources, "quorum")
    assert committed == regenerated, "regenerate with deploy/rabbitmq/make_definitions.py (see its docstring)"


def test_production_definitions_use_quorum_queues_everywhere() -> None:
    queues = _committed()["queues"]
    assert queues
    assert {q["arguments"]["x-queue-type"] for q in queues} == {"quorum"}
    assert all(q["durable"] for q in queues)


def test_the_definitions_load_into_a_real_broker_and_the_services_declare_against_them(amqp_vhost: str) -> None:
    defs = _committed()
    _import_into(amqp_vhost, defs)

    for source in _sources(defs):
        _declare(amqp_vhost, Topology(source=source, queue_type="quorum"))

    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", amqp_vhost, "name", "type", "policy", "--formatter", "json"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    queues = {q["name"]: q for q in json.loads(listed.stdout)}
    assert {q["name"] for q in defs["queues"]} <= set(queues)
    assert queues[actions_queue("default")]["type"] == "quorum"
    assert queues[actions_queue("default")]["policy"] == "skynet-actions-default"


def test_a_declaration_with_other_arguments_is_refused_so_the_check_above_bites(amqp_vhost: str) -> None:
    _import_into(amqp_vhost, _committed())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        _declare(amqp_vhost, Topology(source="default", queue_type="classic"))
    assert refused.value.reply_code == 406  # PRECONDITION_FAILED


def test_definitions_for_several_sources_and_classic_queues_load_too(amqp_vhost: str) -> None:
    defs = _make_definitions().definitions(["cam-1", "scanner_2"], "classic")
    _import_into(amqp_vhost, defs)
    _declare(amqp_vhost, Topology(source="cam-1", queue_type="classic"))
    _declare(amqp_vhost, Topology(source="scanner_2", queue_type="classic"))


def test_a_message_that_keeps_coming_back_ends_in_its_source_dead_queue_not_dropped(amqp_vhost: str) -> None:
    _import_into(amqp_vhost, _committed())
    limit = _make_definitions().DELIVERY_LIMIT
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url_for(amqp_vhost)))
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        ch.basic_publish("skynet.actions", "default", b'{"poison": true}', pika.BasicProperties(delivery_mode=2))
        deliveries = 0
        for _ in range(limit + 5):
            method, _props, _body = ch.basic_get(actions_queue("default"))
            if method is None:
                break
            deliveries += 1
            ch.basic_nack(method.delivery_tag, requeue=True)  # as a consumer that dies on it would
        assert deliveries == limit + 1

        def dead_lettered() -> bytes | None:
            return ch.basic_get("skynet.dead.default", auto_ack=True)[2]

        assert wait_for(dead_lettered, timeout=10, what="the message in skynet.dead.default") == b'{"poison": true}'

    finally:
        connection.close()
