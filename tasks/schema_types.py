"""Constrained field types shared by job payload models."""

from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, Field, UrlConstraints


def _no_line_breaks(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    return value


HttpUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]
SingleLine = Annotated[str, AfterValidator(_no_line_breaks)]
HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]
HeaderValue = Annotated[SingleLine, Field(max_length=8192)]
