"""Quality probes: verifiable tasks sent through the gateway to measure what each tier's depth buys; the
periodic prober and `tiergate probe`."""
