"""Alerts for the data team: conditions evaluated on a home's data, sent once through one notifier.

`conditions` and `norms` are plain functions from observed data to `Alert` records; `observe`
reads that data (the Dagster instance's tables, the published snapshot, the governance ledger);
`notifier` sends what is new (de-duplicated against `dedupe`'s state file) through apprise's
URLs and the webhook/command of the settings; `config` reads the one alerts file.
"""
