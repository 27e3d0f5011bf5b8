"""One inference request from admission to its end: the handler, admission (keys, limits, budgets,
reservations), the catalog of offers, the deliberate tier's run, and the meter that ends every request
once."""
