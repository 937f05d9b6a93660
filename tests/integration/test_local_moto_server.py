"""moto as a child process, and provisioning again after the embedded AWS lost its state."""

import os
import urllib.request

import pytest

from local.moto_server import MotoProcess, MotoServerError, aws_client, free_port
from local.runtime import LocalRuntime
from tests.fixtures.local_stack.harness import TEMPLATE


@pytest.fixture(scope="module")
def moto_process():
    process = MotoProcess(port=free_port())
    process.start()
    yield process
    process.stop()


def reset(endpoint_url):
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_child_process_answers_and_refuses_a_taken_port(moto_process):
    sqs = aws_client("sqs", moto_process.endpoint_url)
    assert sqs.list_queues().get("QueueUrls", []) == []
    with pytest.raises(MotoServerError, match="already answers"):
        MotoProcess(port=moto_process.port).start()


def test_runtime_provisions_again_after_a_reset(moto_process):
    lines = []
    runtime = LocalRuntime(
        TEMPLATE,
        moto_process.endpoint_url,
        stack_name="restart",
        gateway_port=0,
        run_threads=False,
        log=lines.append,
    )
    with runtime:
        sqs = aws_client("sqs", moto_process.endpoint_url)
        queue = runtime.stack.physical_id("WorkQueue")
        assert runtime.ensure_provisioned() is False

        reset(moto_process.endpoint_url)  # as if moto had been restarted
        assert runtime.ensure_provisioned() is True

        assert runtime.stack.physical_id("WorkQueue") == queue  # same names, same environment
        assert (
            sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])[
                "Attributes"
            ]["VisibilityTimeout"]
            == "1"
        )
        assert any("provisioning again" in line for line in lines)
        assert runtime.ensure_provisioned() is False


def test_stop_ends_the_child_process():
    process = MotoProcess(port=free_port())
    process.start()
    pid = process.pid
    assert pid is not None
    process.stop()
    process.stop()  # idempotent
    assert process.pid == pid
    assert not process.alive()
    with pytest.raises(ProcessLookupError):  # gone and reaped, not a zombie
        os.kill(pid, 0)
