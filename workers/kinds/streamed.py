"""``read`` for a kind that streams a split's rows: every row of ``stream`` checked (unique ids,
the bad rows' problems raised together as one DataError with their files and lines)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from orchestrator.contract.kinds import Split
from orchestrator.contract.spec import DatasetSpec

if TYPE_CHECKING:  # a kind module imports only the contract when it loads
    from workers.data.manifest import Row

RowT = TypeVar("RowT", bound="Row")

MAX_ERRORS = 20
"""How many bad rows one error lists (it says how many more there are)."""


class StreamedKind(Generic[RowT]):
    """Base of a kind whose ``stream`` yields a split's good rows and notes each bad one in
    ``problems``; ``read`` is the checked list of them."""

    def stream(
        self,
        name: str,
        ds: DatasetSpec,
        split: Split,
        configured: Sequence[str],
        problems: list[str],
    ) -> Iterator[RowT]:
        raise NotImplementedError

    def read(
        self, name: str, ds: DatasetSpec, split: Split, configured: Sequence[str] = ()
    ) -> list[RowT]:
        from workers.data.manifest import checked_list

        problems: list[str] = []
        rows = self.stream(name, ds, split, configured, problems)
        return checked_list(rows, problems, ds.manifest(split), MAX_ERRORS)
