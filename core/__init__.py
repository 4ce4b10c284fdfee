"""The torch-free bottom layer that every other package imports: the command boundary (exit
statuses, signals, one-line errors, bounded input, atomic writes), exact statistics, and the
result document's schema versions, typed records and reader."""
