"""Failure notifications: a failed step of the nightly job is reported through a hook.

Configured by environment (so a deployment sets it once, tests point it at a local receiver):
- CIVICFLOW_NOTIFY_WEBHOOK: a URL that receives the JSON payload by POST;
- CIVICFLOW_NOTIFY_COMMAND: a command run with the payload on its standard input.
Both may be set. A notification that cannot be delivered is logged, never raised: it must not
hide the failure it reports.
"""

import json
import os
import shlex
import subprocess

import dagster as dg


def failure_payload(context: dg.HookContext) -> dict:
    error = context.op_exception
    run = context.instance.get_run_by_id(context.run_id) if context.instance else None
    tags = run.tags if run else {}
    partition = tags.get("dagster/partition") or "..".join(
        filter(None, [tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")])
    )
    return {
        "event": "civicflow.run_failed",
        "run_id": context.run_id,
        "job": context.job_name,
        "step": context.step_key,
        "assets": assets_of_op(context.op.name),
        "partition": partition,
        "error": f"{type(error).__name__}: {error}" if error else "unknown error",
    }


def assets_of_op(op_name: str) -> list[str]:
    """The assets a failed op was materializing, so the message names them, not just the step."""
    from pipelines.definitions import defs  # loaded already: the hook runs inside the job

    for assets_def in defs.assets or []:
        if isinstance(assets_def, dg.AssetsDefinition) and assets_def.node_def.name == op_name:
            return sorted(k.to_user_string() for k in assets_def.keys)
    return []


def send(payload: dict, log) -> None:
    body = json.dumps(payload, default=str)
    url = os.environ.get("CIVICFLOW_NOTIFY_WEBHOOK")
    command = os.environ.get("CIVICFLOW_NOTIFY_COMMAND")
    if url:
        import httpx

        for attempt in range(3):
            try:
                httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10).raise_for_status()
                break
            except httpx.HTTPError as exc:
                log.warning(f"failure notification to {url} not delivered (attempt {attempt + 1}/3): {exc}")
    if command:
        try:
            subprocess.run(shlex.split(command), input=body, text=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning(f"failure notification command {command!r} failed: {exc}")


@dg.failure_hook(name="notify_on_failure")
def notify_on_failure(context: dg.HookContext) -> None:
    payload = failure_payload(context)
    context.log.error(f"step {payload['step']} failed ({', '.join(payload['assets']) or 'no asset'}): {payload['error']}")
    send(payload, context.log)
