"""The fastapi-redis-cache README's examples as one runnable app, on oxcache.

Runs on the embedded in-memory store; set REDIS_URL to use Redis instead:

    uvicorn examples.app:app                       # in memory
    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.app:app
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from functools import partial, update_wrapper

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from oxcache import Cache, cache, cache_one_day

# -- a tiny SQLite database, as in FastAPI's SQL tutorial -----------------------------------


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(100))


engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
SessionLocal = sessionmaker(bind=engine)
Base.metadata.create_all(engine)
with SessionLocal() as _db:
    _db.add_all(
        [
            UserRow(id=1, name="Ada", email="ada@example.com", password_hash="x1"),
            UserRow(id=2, name="Linus", email="linus@example.com", password_hash="x2"),
        ]
    )
    _db.commit()


def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


class User(BaseModel):
    """What the API shows of a user: never the password hash."""

    model_config = {"from_attributes": True}
    id: int
    name: str
    email: str


# -- the store and the app -------------------------------------------------------------------

store = Cache(
    url=os.environ.get("REDIS_URL") or None,  # None: the embedded in-memory store
    prefix="myapi-cache",
    response_header="X-MyAPI-Cache",
    ignore_arg_types=[Session],
)
app = FastAPI(title="oxcache example", lifespan=store.lifespan)

ONE_HOUR_IN_SECONDS = 3600
cache_two_hours = partial(cache, expire=ONE_HOUR_IN_SECONDS * 2)
update_wrapper(cache_two_hours, cache)


@app.get("/data_no_cache")
def get_data() -> dict[str, object]:
    return {"success": True, "message": "this data is not cacheable, for... you know, reasons"}


@app.get("/immutable_data")
@cache()
async def get_immutable_data() -> dict[str, object]:
    return {"success": True, "message": "this data can be cached indefinitely"}


@app.get("/dynamic_data")
@cache(expire=30)
def get_dynamic_data(request: Request, response: Response) -> dict[str, object]:
    return {"success": True, "message": "this data should only be cached temporarily"}


@app.get("/cache_one_day")
@cache_one_day()
def partial_cache_one_day(response: Response) -> dict[str, object]:
    return {"success": True, "message": "this data should be cached for 24 hours"}


@app.get("/cache_two_hours")
@cache_two_hours()
def partial_cache_two_hours(response: Response) -> dict[str, object]:
    return {"success": True, "message": "this data should be cached for two hours"}


@app.get("/get_user", response_model=User)
@cache(expire=3600)
def get_user(id: int, db: Session = Depends(get_db)) -> UserRow:
    user = db.get(UserRow, id)
    if user is None:
        raise HTTPException(status_code=404, detail="no such user")
    return user


class MLBGameDate:
    """A validating dependency whose value matters to the response: `__str__` keys it."""

    def __init__(
        self,
        game_date: str = Query(..., description="Date as a string in YYYYMMDD format"),
    ) -> None:
        try:
            self.date = dt.datetime.strptime(game_date, "%Y%m%d").date()
        except ValueError as ex:
            raise HTTPException(status_code=400, detail=str(ex)) from ex
        if not dt.date(2019, 3, 20) <= self.date <= dt.date(2019, 10, 30):
            raise HTTPException(status_code=400, detail="not in the 2019 season")

    def __str__(self) -> str:
        return self.date.strftime("%Y-%m-%d")


@app.get("/scoreboard")
@cache()
def get_scoreboard_for_date(
    game_date: MLBGameDate = Depends(), db: Session = Depends(get_db)
) -> dict[str, object]:
    return {"date": game_date.date.isoformat(), "games": 15}


# -- per-user caching: login, a cached per-user endpoint, an update, logout -------------------

SESSIONS: dict[str, int] = {}  # token -> user id; a real app checks a signed token or a DB
PREFS: dict[int, dict[str, str]] = {1: {"theme": "dark"}, 2: {"theme": "light"}}


def current_user_id(authorization: str | None = Header(default=None)) -> int:
    """The caller's user id from `Authorization: Bearer <token>`; 401 without a valid one."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    if token not in SESSIONS:
        raise HTTPException(status_code=401, detail="not logged in")
    return SESSIONS[token]


@app.post("/login")
def login(user_id: int) -> dict[str, str]:
    token = secrets.token_urlsafe(16)
    SESSIONS[token] = user_id
    return {"token": token}


@app.get("/me/prefs")
@cache(expire=300, per_user=current_user_id)  # one entry per user, Cache-Control: private
def my_prefs(user_id: int = Depends(current_user_id)) -> dict[str, object]:
    return {"user": user_id, **PREFS.get(user_id, {})}


@app.put("/me/prefs")
async def set_my_prefs(theme: str, user_id: int = Depends(current_user_id)) -> dict[str, str]:
    PREFS[user_id] = {"theme": theme}
    await store.invalidate(my_prefs)  # every user's variant of GET /me/prefs
    return {"theme": theme}


@app.post("/logout")
async def logout(
    authorization: str | None = Header(default=None),
    user_id: int = Depends(current_user_id),
) -> dict[str, int]:
    SESSIONS.pop((authorization or "").removeprefix("Bearer ").strip(), None)
    return {"deleted": await store.invalidate_user(user_id)}  # this user's entries only
