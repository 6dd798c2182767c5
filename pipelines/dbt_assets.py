"""The dbt project as Dagster assets: every model its own asset, every dbt test an asset check.

Policy (keys, groups, owners) lives in one translator, not in every model. The manifest is
built with `dbt parse` (never `dbt compile`, which would open the warehouse) when it is
missing or older than the project files.
"""


import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from pipelines.home import DBT_PROJECT_DIR
from pipelines.resources import WRITER_POOL

OWNERS = {"staging": "team:data-platform", "intermediate": "team:analytics-engineering", "marts": "team:analytics-engineering"}


class CivicflowTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        # raw sources → raw/<table> (the ingest assets); models → <schema>/<model>.
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        return [OWNERS.get(dbt_resource_props.get("schema", ""), "team:analytics-engineering")]

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return dbt_resource_props.get("description") or f"dbt model {dbt_resource_props['name']}"


def dbt_project() -> DbtProject:
    # dbt is installed beside this interpreter; dagster-dbt looks for it on PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if _manifest_stale(project):
        project.preparer.prepare(project)
    return project


def _manifest_stale(project: DbtProject) -> bool:
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [p for ext in ("*.sql", "*.yml", "*.yaml", "*.csv") for p in DBT_PROJECT_DIR.rglob(ext) if "target" not in p.parts]
    return any(p.stat().st_mtime > built for p in sources)


def build_dbt_assets(project: DbtProject) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=CivicflowTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)),
        pool=WRITER_POOL,
        name="warehouse_dbt",
    )
    def warehouse_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    return warehouse_dbt
