"""What every reference fixture's batches must hold: terminated, truncated and ordinary rows (never both flags)."""


def assert_every_row_kind(batches: list[dict]) -> None:
    for batch in batches:
        term, trunc = batch["terminated"].bool(), batch["truncated"].bool()
        assert term.any() and trunc.any() and (~term & ~trunc).any() and not (term & trunc).any()
