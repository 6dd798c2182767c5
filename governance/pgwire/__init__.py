"""The gateway's PostgreSQL wire protocol (v3) endpoint: a small codec over asyncio, SCRAM
login with the key, and sessions whose every query goes through `Gateway.query`."""
