"""A PostgreSQL catalog URL for DuckLake, parsed once; its password never reaches a log."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit


@dataclass(frozen=True)
class CatalogUrl:
    """`postgresql://USER:PASSWORD@HOST:PORT/DBNAME[?libpq params]`."""

    host: str
    port: int
    dbname: str
    user: str = ""
    password: str = ""
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> CatalogUrl:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg2:// is accepted too
        if scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.path.strip("/"):
            raise ValueError(
                f"a DuckLake catalog is a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DBNAME (got scheme {parts.scheme!r})"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=unquote(parts.path.strip("/")),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            params=tuple(parse_qsl(parts.query)),
        )

    def same_database(self, other: CatalogUrl) -> bool:
        return (self.host, self.port, self.dbname) == (other.host, other.port, other.dbname)

    def public(self) -> str:
        """The URL without its password: safe to log, show and publish."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        query = "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in self.params) if self.params else ""
        return f"postgresql://{user}{self.host}:{self.port}/{quote(self.dbname, safe='')}{query}"

    def __repr__(self) -> str:  # a dataclass repr would print the password
        return f"CatalogUrl({self.public()!r})"
