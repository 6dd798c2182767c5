"""dbt's CLI resource, without the two things dagster-dbt does before every invocation that this
project never uses, each costing seconds of a quiet night:

- `dbt --version` in a subprocess (a whole dbt start) to learn the version: dbt-core is a
  pinned dependency of this environment, so its package metadata says the same;
- an in-process dbt adapter with every macro loaded, which only dagster-dbt's
  `fetch_row_counts` / `fetch_column_metadata` would use: the row counts are taken by the dbt
  asset itself, through the warehouse resource, after dbt has released the file.

Both are private methods of dagster-dbt 0.29 (pinned `<0.30`): tests/test_definitions.py
checks that a real dbt build still runs through this resource.
"""

from functools import cached_property
from importlib.metadata import version as installed_version

from dagster_dbt import DbtCliResource
from packaging import version


class DbtCli(DbtCliResource):
    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        # dagster-dbt catches a failure here and goes on without an adapter; None says the same
        # without building one.
        return None
