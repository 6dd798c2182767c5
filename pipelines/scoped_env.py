"""The one place the project writes the environment: variables scoped to one call."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def scoped_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Variables set around one call and restored after it.

    For the dbt child process: dagster-dbt hands the dbt subprocess a copy of this process's
    environment (and reads dbt's profile, dbt_project/profiles.yml, in-process too). And for
    Dagster's own switches, which it reads from the environment only."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def _set_env(values: Mapping[str, str | None]) -> None:
    """Set each variable, or unset it where the value is None."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
