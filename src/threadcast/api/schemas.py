"""Request and response bodies (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

FORUM_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = AfterValidator(_without_nul)
"""Text that PostgreSQL can store: its text types refuse NUL (messages are sanitized instead)."""
Text = Annotated[str, NoNul]


class ForumIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=FORUM_NAME, examples=["demo"])
    title: Text = Field(min_length=1, max_length=200)


class ForumOut(BaseModel):
    id: int
    name: str
    title: str
    created_at: str


class ThreadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    forum: str = Field(pattern=FORUM_NAME)
    identifier: Text = Field(min_length=1, max_length=255, examples=["article-42"])
    title: Text = Field("", max_length=300)
    url: Text = Field("", max_length=2048)


class ThreadOut(BaseModel):
    id: int
    forum: str
    identifier: str
    title: str
    url: str
    post_count: int
    created_at: str


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    author_name: Text = Field(min_length=1, max_length=100)
    message: str = Field(min_length=1, description="HTML; sanitized on the way in.")
    parent_id: int | None = Field(None, ge=1)


class PostOut(BaseModel):
    id: int
    thread_id: int
    parent_id: int | None
    seq: int = Field(description="Per-thread sequence number: 1, 2, 3... A hole means a missed post.")
    author_name: str
    message: str
    created_at: str
    version: int = Field(description="Grows with every edit of the post's content (votes leave it alone).")
    score: int = Field(description="The sum of the post's votes: upvotes - downvotes.")
    upvotes: int
    downvotes: int
    score_version: int = Field(description="Grows with every change to the post's votes: the highest is the newest score.")


class PostPage(BaseModel):
    posts: list[PostOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    value: StrictInt = Field(ge=-1, le=1, description="1 votes up, -1 down, 0 takes the voter's vote back.")
    voter: Text = Field(min_length=1, max_length=100, description="The voter's name, as the post form's author_name.")


class VoteOut(BaseModel):
    post_id: int
    voter: str
    value: int = Field(description="The voter's vote now: 1, -1, or 0 for none.")
    score: int
    upvotes: int
    downvotes: int
    score_version: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
