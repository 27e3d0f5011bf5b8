"""What each request did and what it cost: the exchange record, the usage record, the bookkeeper (journal and
ledger), the JSON request log and the Prometheus metrics."""
