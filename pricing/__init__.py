"""Money: price books, rating of usage records into charge lines, the ledger and exports.

Knows nothing of HTTP or engines. Filled in by the pricing issue; the gateway hands it usage through
`gateway.metering.MeterSink`.
"""

__all__: list[str] = []
