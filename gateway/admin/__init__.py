"""Operating the gateway: the admin API, the tenant's usage routes, statements (invoices and exports), the
admin CLI and its backends (local database or HTTP)."""
