"""The bottom layer every stage uses: where the warehouse is, opening it, publishing and reading
snapshots. It imports nothing else of the project (tests/test_layers.py holds it to that).

- `settings`: the warehouse configuration, the only reader of its environment variables;
- `backends`: one interface, two implementations (a DuckDB file, DuckLake on PostgreSQL);
- `snapshots`: the published `CURRENT` pointer and opening a snapshot read-only;
- `retry`: the one bounded retry for a locked file or an unreachable catalog;
- `tables`: small catalog questions every stage asks ("does this table exist").
"""
