"""Overrides from the home's `overrides/` folder: a sensor sees a new file (CSV or workbook)
and launches the `apply_overrides` job, which validates and applies it (forecasts/overrides.py:
all or nothing), writes the dispatched plan and moves the file to `overrides/applied/` or,
refused, to `overrides/refused/` with a `<file>.why.txt` naming each bad row.

The sensor only lists the folder (it never opens the warehouse); the job's step runs in the
warehouse writer pool like every other writer.
"""

import shutil
from pathlib import Path

import dagster as dg

from pipelines.resources import WRITER_POOL, WarehouseResource

JOB = "apply_overrides"
SUFFIXES = (".csv", ".xlsx")


def pending(folder: Path) -> list[Path]:
    """Override files waiting in `folder` (not its applied/ and refused/ subfolders)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith((".", "~$")))


def owner_of(path: Path) -> str:
    try:
        return path.owner()
    except (KeyError, NotImplementedError, OSError):
        return "unknown"


def apply_file(con, path: Path, changed_by: str, exports_dir: Path):
    """Apply one override file and write the dispatched plan: (Applied, dispatched CSV)."""
    from forecasts import overrides

    applied = overrides.apply(con, path, changed_by)
    return applied, overrides.export_dispatched(con, applied.as_of, exports_dir)


class OverrideFile(dg.Config):
    path: str
    changed_by: str = ""


def build_overrides_job(folder: Path, exports_dir: Path) -> dg.JobDefinition:
    @dg.op(name="apply_override_file", pool=WRITER_POOL,
           description="Validate an override file and, if every row is valid, apply it and approve the plan.")
    def apply_override_file(context: dg.OpExecutionContext, config: OverrideFile, warehouse: WarehouseResource):
        from forecasts.overrides import OverridesRefused

        path = Path(config.path)
        by = config.changed_by or f"{owner_of(path)} (overrides folder)"
        try:
            with warehouse.connect(context) as con:
                applied, csv = apply_file(con, path, by, exports_dir)
        except OverridesRefused as exc:
            refused = folder / "refused"
            refused.mkdir(parents=True, exist_ok=True)
            (refused / f"{path.name}.why.txt").write_text("\n".join([str(exc), *exc.problems]) + "\n", encoding="utf-8")
            shutil.move(str(path), refused / path.name)
            raise dg.Failure(str(exc), metadata={"problems": dg.MetadataValue.json(exc.problems)}) from None
        done = folder / "applied"
        done.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), done / path.name)
        context.log.info(f"{path.name}: {applied.changed} change(s) by {by}; plan of {applied.as_of} {applied.status}")
        return dg.Output(None, metadata={"as_of": str(applied.as_of), "changes": applied.changed, "status": applied.status,
                                         "dispatched_plan": dg.MetadataValue.path(str(csv))})

    @dg.job(name=JOB, description="Apply one override file from the overrides folder (all or nothing).")
    def apply_overrides():
        apply_override_file()

    return apply_overrides


def build_overrides_sensor(job: dg.JobDefinition, folder: Path) -> dg.SensorDefinition:
    @dg.sensor(name="overrides_sensor", job=job, minimum_interval_seconds=30,
               description="Launches apply_overrides for every new file in the home's overrides folder.")
    def overrides_sensor(context: dg.SensorEvaluationContext):
        files = pending(folder)
        if not files:
            return dg.SkipReason(f"no override file in {folder}")
        return [dg.RunRequest(run_key=f"{p.name}@{p.stat().st_mtime_ns}",
                              run_config={"ops": {"apply_override_file": {"config": {"path": str(p)}}}},
                              tags={"civicflow/overrides": p.name})
                for p in files]

    return overrides_sensor

