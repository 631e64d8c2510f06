"""An illustrative 2025-26 school year the unit tests share: half-terms between terms, INSET days
opening autumn 1 and spring 1."""

from datetime import date

from shared.domain.calendar import Term

D = date.fromisoformat

TERMS_2025_26 = (
    Term("Autumn 1", D("2025-09-01"), D("2025-10-24")),
    Term("Autumn 2", D("2025-11-03"), D("2025-12-19")),
    Term("Spring 1", D("2026-01-05"), D("2026-02-13")),
    Term("Spring 2", D("2026-02-23"), D("2026-03-27")),
    Term("Summer 1", D("2026-04-13"), D("2026-05-22")),
    Term("Summer 2", D("2026-06-01"), D("2026-07-22")),
)
INSET_2025_26 = frozenset({D("2025-09-01"), D("2025-09-02"), D("2026-01-05")})
