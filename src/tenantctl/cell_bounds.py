"""The ranges of a cell's numeric settings, (least, most): ``CellSpec`` checks a
stack file against them and `cell add` refuses an option out of them as a usage
error (exit 2, naming the option) before anything is read or written. Apart from
the models: `tenantctl cell --help` loads no pydantic model."""

MAX_POOLED_TENANTS = (1, 20000)
DB_CONNECTION_LIMIT = (1, 1000)  # per database login; a tenant's own override too
PLATFORM_CONNECTIONS = (0, 100000)


def option_range(bounds: tuple[int, int]) -> dict[str, int]:
    """``bounds`` as typer's ``min`` / ``max``."""
    return {"min": bounds[0], "max": bounds[1]}
