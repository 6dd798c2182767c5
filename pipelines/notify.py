"""Failure notifications: a failed step of the nightly job is reported through a hook.

Configured in the settings (so a deployment sets it once, tests point it at a local receiver):
- CIVICFLOW_NOTIFY_WEBHOOK: a URL that receives the JSON payload by POST;
- CIVICFLOW_NOTIFY_COMMAND: a command run with the payload on its standard input.
Both may be set. A notification that cannot be delivered is logged, never raised: it must not
hide the failure it reports.
"""

import json
import shlex
import subprocess
from collections.abc import Mapping

import dagster as dg

from pipelines.settings import NotifySettings


def failure_payload(context: dg.HookContext, assets_by_op: Mapping[str, list[str]]) -> dict:
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
        "assets": list(assets_by_op.get(context.op.name, [])),
        "partition": partition,
        "error": f"{type(error).__name__}: {error}" if error else "unknown error",
    }


def assets_by_op(assets: list[dg.AssetsDefinition]) -> dict[str, list[str]]:
    """The assets each op materializes, so a failure message names them, not just the step."""
    return {a.node_def.name: sorted(k.to_user_string() for k in a.keys) for a in assets if isinstance(a, dg.AssetsDefinition)}


def send(payload: dict, log, settings: NotifySettings) -> None:
    body = json.dumps(payload, default=str)
    url, command = settings.webhook, settings.command
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


def build_failure_hook(settings: NotifySettings, by_op: Mapping[str, list[str]]) -> dg.HookDefinition:
    @dg.failure_hook(name="notify_on_failure")
    def notify_on_failure(context: dg.HookContext) -> None:
        payload = failure_payload(context, by_op)
        context.log.error(f"step {payload['step']} failed ({', '.join(payload['assets']) or 'no asset'}): {payload['error']}")
        send(payload, context.log, settings)

    return notify_on_failure
