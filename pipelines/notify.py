"""Dagster's side of the alerts: the failure hook of a step, the alerts job, and the sensors
that request it after each nightly run.

Both go through the one notifier of pipelines/alerts (apprise's URLs from the alerts file, the
settings' CIVICFLOW_NOTIFY_WEBHOOK and CIVICFLOW_NOTIFY_COMMAND) and its sent-alert state, so a
failed run alerts once however many of them notice it. A notification that cannot be delivered
is logged, never raised: it must not hide the failure it reports.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from pipelines.alerts.conditions import FailedRun, run_failed
from pipelines.alerts.config import AlertsConfig, AlertsFileError, load_alerts
from pipelines.alerts.notifier import Notifier, deliver
from pipelines.settings import Settings


def failed_run(context: dg.HookContext, assets_by_op: Mapping[str, list[str]]) -> FailedRun:
    error = context.op_exception
    run = context.instance.get_run_by_id(context.run_id) if context.instance else None
    tags = run.tags if run else {}
    partition = tags.get("dagster/partition") or "..".join(
        filter(None, [tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")])
    )
    return FailedRun(
        run_id=context.run_id, job=context.job_name, partitions=partition, step=context.step_key,
        assets=tuple(assets_by_op.get(context.op.name, [])), error=f"{type(error).__name__}: {error}" if error else "unknown error",
    )


def assets_by_op(assets: list[dg.AssetsDefinition]) -> dict[str, list[str]]:
    """The assets each op materializes, so a failure message names them, not just the step."""
    return {a.node_def.name: sorted(k.to_user_string() for k in a.keys) for a in assets if isinstance(a, dg.AssetsDefinition)}


def _notifier(settings: Settings, log) -> Notifier:
    """The notifier; a broken alerts file costs its URLs (said in the log), not the webhook and command."""
    try:
        config = load_alerts(settings.notify.alerts_file)
    except AlertsFileError as exc:
        log.warning(f"alerts file not read, its URLs are skipped: {exc}")
        config = AlertsConfig()
    return Notifier(config.urls, settings.notify.webhook, settings.notify.command)


def build_failure_hook(settings: Settings, by_op: Mapping[str, list[str]]) -> dg.HookDefinition:
    @dg.failure_hook(name="notify_on_failure")
    def notify_on_failure(context: dg.HookContext) -> None:
        run = failed_run(context, by_op)
        context.log.error(f"step {run.step} failed ({', '.join(run.assets) or 'no asset'}): {run.error}")
        notifier = _notifier(settings, context.log)
        if notifier.configured:
            deliver([run_failed(run)], notifier, settings.home.alerts_state, log=context.log)

    return notify_on_failure


ALERTS_JOB = "alerts"


def build_alerts_job(settings: Settings) -> dg.JobDefinition:
    """One alerts check of the home as a job: the sensors request it after each nightly run (a
    sensor never reads the snapshot itself; the run does). It reads the published snapshot,
    never the live warehouse, so it is not in the writer pool."""

    @dg.op(name="check_alerts", description="Evaluate every alert condition on the home and send what is new through the notifier.")
    def check_alerts(context) -> None:
        from pipelines.alerts.check import check_home

        try:
            result = check_home(settings, log=context.log)
        except AlertsFileError as exc:
            context.log.warning(f"alerts not checked: {exc}")
            return
        sent, failed = result.delivery.sent, result.delivery.failed
        context.log.info(f"alerts: {len(result.alerts)} hold, {len(sent)} sent, {len(result.delivery.plan.repeated)} already sent, "
                         f"{len(failed)} not delivered" + (f"; {'; '.join(result.notes)}" if result.notes else ""))

    @dg.job(name=ALERTS_JOB, description="Check every alert condition of the home and send the new ones (after each nightly run).",
            executor_def=dg.in_process_executor)
    def alerts_job():
        check_alerts()

    return alerts_job


def build_alert_sensors(job: dg.UnresolvedAssetJobDefinition, alerts_job: dg.JobDefinition) -> list[dg.SensorDefinition]:
    """After each run of `job`, succeeded or failed: a run of the alerts job."""

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[job], request_job=alerts_job, name="alerts_after_success",
                          description="After a successful nightly run: run the alerts check.")
    def alerts_after_success(context: dg.RunStatusSensorContext):
        return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")

    @dg.run_failure_sensor(monitored_jobs=[job], request_job=alerts_job, name="alerts_after_failure",
                           description="After a failed nightly run: run the alerts check.")
    def alerts_after_failure(context: dg.RunFailureSensorContext):
        return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")

    return [alerts_after_success, alerts_after_failure]
